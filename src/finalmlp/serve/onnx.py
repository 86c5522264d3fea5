"""ONNX export of a run's model, and scoring encoded rows with ONNX Runtime.

::

    RUN_DIR/                 a run directory (see finalmlp.bundle), plus after export:
    ├── model.onnx           encoded ids in, click probability out
    └── model.onnx.json      sha256 of model.onnx, the run content hash it was exported from,
                             its inputs, opset and exporter

    model.onnx inputs (B is a dynamic axis)        output
    ├── categorical  (B, C) int32                  probability (B,) float32
    ├── numeric      (B, D) float32
    └── sequence_<i> (B, L_i) int32, one per sequence field, 0-padded

An input the model has no field for (C or D == 0) is left out of the graph; :class:`OnnxModel`
feeds the inputs the graph declares. The side file is what makes an export trustworthy:
``model.onnx`` is used only when its sha256 and the run's content hash both match it, so a
re-trained or edited run never scores with a stale graph. The run's own content hash
(config.json, processor.json, model.safetensors) does not cover the export, so exporting
never changes how the run loads.

The graph outputs the model's raw probability. A calibrated run (``calibration.json``) is
calibrated after ONNX Runtime, in NumPy, by :meth:`finalmlp.bundle.Run.calibrate`, as after
PyTorch: the export is matched against the run's ``model_sha256`` (config, processor,
weights), so calibrating a run again keeps its export current.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.bundle import Run, load_run
from finalmlp.data.dataset import EncodedSplit
from finalmlp.errors import DataError, FinalMLPError
from finalmlp.features.processor import EncodedFeatures
from finalmlp.io import atomic_write, atomic_write_text
from finalmlp.models.base import CTRModel
from finalmlp.serve.fold import serving_model

ONNX_FILE = "model.onnx"
SIDE_FILE = "model.onnx.json"
OPSET = 18  # the dynamo exporter's own; the legacy one supports it too
PARITY_TOLERANCE = 1e-5  # max |ORT - torch| probability accepted by the export self-check
Exporter = Literal["auto", "torchscript", "dynamo"]


class ExportError(FinalMLPError, RuntimeError):
    """The model could not be exported, or the exported graph does not score like the model."""


class ProbabilityModule(nn.Module):
    """The run's model as the ONNX graph sees it: tensors in, probabilities (B, T) out.

    Args:
        model: the model to export, in eval mode (the served model: gates folded).
        has_categorical, has_numeric: whether the graph takes that input (C > 0, D > 0).
        num_sequences: number of sequence inputs.
    """

    def __init__(
        self, model: CTRModel, has_categorical: bool, has_numeric: bool, num_sequences: int
    ) -> None:
        super().__init__()
        self.model = model
        self.has_categorical, self.has_numeric = has_categorical, has_numeric
        self.num_sequences = num_sequences

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        rest = list(inputs)
        # An absent kind is never read by the model (no field of it): an empty placeholder.
        categorical = rest.pop(0) if self.has_categorical else torch.zeros(0, 0, dtype=torch.int32)
        numeric = rest.pop(0) if self.has_numeric else torch.zeros(0, 0)
        batch = Batch(categorical, numeric, tuple(rest))
        return torch.sigmoid(self.model(batch))  # (B, T)


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how the graph compared with the model."""

    path: Path
    sha256: str
    exporter: str
    max_abs_diff: float
    seconds: float


def input_names(features: EncodedFeatures) -> list[str]:
    """The graph's input names for data shaped like ``features``."""
    names = []
    if features.categorical.shape[1]:
        names.append("categorical")
    if features.numeric.shape[1]:
        names.append("numeric")
    names += [f"sequence_{i}" for i in range(len(features.sequences))]
    return names


def feeds(features: EncodedFeatures, start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows [start, stop) of every input, as the graph's dtypes (int32 ids, float32 values)."""
    out = {
        "categorical": np.ascontiguousarray(features.categorical[start:stop], dtype=np.int32),
        "numeric": np.ascontiguousarray(features.numeric[start:stop], dtype=np.float32),
    }
    for i, seq in enumerate(features.sequences):
        out[f"sequence_{i}"] = np.ascontiguousarray(seq[start:stop], dtype=np.int32)
    return out


def sample_features(run: Run, num_rows: int, seed: int = 0) -> EncodedFeatures:
    """Random valid encoded rows for ``run`` (ids within each table, some padding)."""
    layout = run.processor.layout
    rng = np.random.default_rng(seed)
    sizes = [layout.table_sizes[t] for t in layout.categorical_tables]
    categorical = np.stack(
        [rng.integers(0, s, num_rows) for s in sizes], axis=1
    ) if sizes else np.zeros((num_rows, 0))  # fmt: skip
    numeric = rng.normal(size=(num_rows, len(layout.numeric_fields)))
    sequences = []
    for feature, table in zip(run.processor.sequence_features, layout.sequence_tables, strict=True):
        ids = rng.integers(0, layout.table_sizes[table], (num_rows, feature.max_len))
        ids[0] = 0  # an empty sequence
        sequences.append(ids.astype(np.int32))
    return EncodedFeatures(
        categorical.astype(np.int32), numeric.astype(np.float32), tuple(sequences)
    )


def export_onnx(run_dir: str | Path, opset: int = OPSET, exporter: Exporter = "auto") -> OnnxExport:
    """Write ``RUN_DIR/model.onnx`` and its side file (see the module docstring).

    Both files are written atomically, the graph first: a crash in between leaves a side file
    that does not match the graph, which :func:`export_problem` reports, never a silent mix.

    Raises:
        DataError: not a loadable run directory.
        ExportError: see :func:`write_onnx`.
    """
    started = time.perf_counter()
    run = load_run(run_dir)
    target = run.path / ONNX_FILE
    used, diff = write_onnx(run, target, opset, exporter)
    digest = file_sha256(target)
    side = {
        "file": ONNX_FILE,
        "sha256": digest,
        "run_content_sha256": _run_hash(run.path),
        "inputs": input_names(sample_features(run, 1)),
        "sequence_fields": [f.name for f in run.processor.sequence_features],
        "output": "probability",
        "tasks": run.tasks,
        "opset": opset,
        "exporter": used,
        "torch": torch.__version__,
        "max_abs_diff": diff,
    }
    atomic_write_text(run.path / SIDE_FILE, json.dumps(side, indent=2))
    return OnnxExport(target, digest, used, diff, time.perf_counter() - started)


def write_onnx(
    run: Run, path: Path, opset: int = OPSET, exporter: Exporter = "auto"
) -> tuple[str, float]:
    """Export the run's model to ``path`` (atomically) and check it against PyTorch.

    ``auto`` tries the legacy TorchScript exporter first (a fraction of a second, where the
    torch.export-based one takes seconds) and falls back to the torch.export-based one.

    Returns:
        The exporter used, and the largest |ORT - PyTorch| probability on random rows.

    Raises:
        ExportError: neither exporter worked, or the scores differ by more than 1e-5 (the
            graph is then not kept).
    """
    example = sample_features(run, 3)
    names = input_names(example)
    served = serving_model(run.model)  # foldable gates precomputed: fewer operations per row
    module = ProbabilityModule(
        served, "categorical" in names, "numeric" in names, len(example.sequences)
    ).eval()
    used = ""

    def write(tmp: Path) -> None:
        nonlocal used
        used = _export(module, example, names, tmp, opset, exporter)

    atomic_write(path, write)
    check = sample_features(run, 257, seed=1)
    diff = float(
        np.abs(OnnxModel(path).predict(check) - torch_probabilities(run.model, check)).max()
    )
    if not diff <= PARITY_TOLERANCE:
        path.unlink()
        raise ExportError(
            f"the exported graph scores differ from PyTorch by up to {diff:.2e} "
            f"(> {PARITY_TOLERANCE:g}); not kept. Please report this with the run's config"
        )
    return used, diff


def _export(
    module: ProbabilityModule,
    example: EncodedFeatures,
    names: list[str],
    path: Path,
    opset: int,
    exporter: Exporter,
) -> str:
    """Export with the chosen exporter (auto: legacy, else dynamo); returns which one worked."""
    arrays = feeds(example, 0, example.num_rows)
    args = tuple(torch.from_numpy(arrays[name]) for name in names)
    axes = {name: {0: "batch"} for name in [*names, "probability"]}
    errors = []
    choices = {"auto": (False, True), "torchscript": (False,), "dynamo": (True,)}[exporter]
    for dynamo in choices:
        # Both exporters warn about their own internals (deprecation, tracing) and the dynamo
        # one prints progress to stdout: none of it is the user's business.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                options: dict[str, Any] = {"dynamic_axes": axes}
                if dynamo:  # forward(*inputs): one spec, a tuple with an entry per input
                    batch = torch.export.Dim("batch")
                    shapes = (tuple({0: batch} for _ in names),)
                    options = {"dynamic_shapes": shapes, "external_data": False}
                torch.onnx.export(
                    module,
                    args,
                    str(path),
                    input_names=names,
                    output_names=["probability"],
                    opset_version=opset,
                    dynamo=dynamo,
                    **options,
                )
                return "dynamo" if dynamo else "torchscript"
            except Exception as exc:  # any failure: try the other exporter
                errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {_first_line(exc)}")
    raise ExportError(f"cannot export the model to ONNX ({'; '.join(errors)})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_hash(run_dir: Path) -> str | None:
    """The hash of the run's model files from its manifest: ``model_sha256``, or for a run
    written before calibration existed its ``content_sha256`` (the same files). None when
    unreadable: matches nothing."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict):
        return None
    return str(manifest.get("model_sha256", manifest.get("content_sha256")))


def export_problem(run_dir: str | Path) -> str | None:
    """Why ``RUN_DIR/model.onnx`` cannot be used for this run, or None when it can."""
    run_dir = Path(run_dir)
    onnx_path, side_path = run_dir / ONNX_FILE, run_dir / SIDE_FILE
    if not onnx_path.is_file():
        return f"{run_dir} has no {ONNX_FILE}"
    try:
        side = json.loads(side_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return f"{side_path} is missing or damaged"
    if not isinstance(side, dict) or side.get("sha256") != file_sha256(onnx_path):
        return f"{onnx_path} does not match {SIDE_FILE} (edited, truncated or half-written)"
    run_hash = _run_hash(run_dir)
    if run_hash is None or side.get("run_content_sha256") != run_hash:
        return f"{onnx_path} was exported from another version of this run (re-trained since)"
    return None


def torch_probabilities(
    model: CTRModel, features: EncodedFeatures, batch_size: int = 16384
) -> np.ndarray:
    """Probabilities (N, T) float64 with PyTorch, as :func:`finalmlp.inference.predict_proba`
    computes them (sigmoid in float64 of the float32 logits)."""
    model.eval()
    out = np.empty((features.num_rows, model.num_tasks), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, features.num_rows, batch_size):
            stop = min(start + batch_size, features.num_rows)
            batch = Batch(
                torch.from_numpy(features.categorical[start:stop]),
                torch.from_numpy(features.numeric[start:stop]),
                tuple(torch.from_numpy(s[start:stop]) for s in features.sequences),
            )
            out[start:stop] = torch.sigmoid(model(batch).double()).numpy()
    return out


class OnnxModel:
    """Scores encoded rows with an exported graph on ONNX Runtime's CPU provider.

    Args:
        path: a ``model.onnx`` file (use :meth:`from_run` to check it belongs to a run).
        intra_op_threads: ORT intra-op threads (default: ORT's choice, one per core).

    Example:
        >>> model = OnnxModel.from_run("runs/frappe")
        >>> model.predict(split)  # (N, T) float64, like finalmlp.inference.predict_proba
    """

    def __init__(self, path: str | Path, intra_op_threads: int | None = None) -> None:
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3  # errors only: no warnings about unused initializers
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise DataError(f"cannot load the ONNX graph {path}: {_first_line(exc)}") from None
        self.path = Path(path)
        self.inputs = [i.name for i in self.session.get_inputs()]

    @classmethod
    def from_run(cls, run_dir: str | Path, intra_op_threads: int | None = None) -> OnnxModel:
        """The run's ``model.onnx``, after checking it is the export of this very run.

        Raises:
            DataError: no export, or one that does not match the run (with how to fix it).
        """
        problem = export_problem(run_dir)
        if problem is not None:
            raise DataError(f"{problem}; run `finalmlp export {run_dir} --onnx`")
        return cls(Path(run_dir) / ONNX_FILE, intra_op_threads)

    def predict(self, data: EncodedSplit | EncodedFeatures, batch_size: int = 16384) -> np.ndarray:
        """Probabilities (N, T) float64 of every row, in order (a graph exported before tasks
        existed outputs (B,): one task)."""
        features = data.features if isinstance(data, EncodedSplit) else data
        parts = []
        for start in range(0, features.num_rows, batch_size):
            stop = min(start + batch_size, features.num_rows)
            arrays = feeds(features, start, stop)
            (probs,) = self.session.run(None, {name: arrays[name] for name in self.inputs})
            parts.append(np.asarray(probs, dtype=np.float64).reshape(stop - start, -1))
        if not parts:
            width = self.session.get_outputs()[0].shape
            return np.empty((0, width[1] if len(width) == 2 else 1), dtype=np.float64)
        return np.concatenate(parts)
