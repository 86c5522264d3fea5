"""The run directory: everything needed to score raw rows, as JSON and safetensors (no pickle).

::

    RUN_DIR/
    ├── manifest.json     format version, package versions, model name, content hash
    ├── config.json       the resolved config (recipes applied, paths absolute)
    ├── processor.json    the fitted FeatureProcessor
    ├── model.safetensors the weights
    ├── calibration.json  optional: the post-hoc calibrator (finalmlp.calibration)
    └── metrics.json      valid/test metrics, epochs, speed, history, calibration effect

The manifest holds two hashes: ``model_sha256`` over config, processor and weights (what an
ONNX export must match), and ``content_sha256`` over those and ``calibration.json`` when there
is one (what every score depends on: verified on load, and the served model version). Without
calibration the two are equal and the bundle is format 1, as before calibration existed;
with it the bundle is format 2, which older finalmlp versions refuse by name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from finalmlp import __version__
from finalmlp.calibration import CALIBRATION_FILE, Calibration
from finalmlp.errors import ConfigError, DataError
from finalmlp.features.processor import FeatureProcessor
from finalmlp.io import atomic_directory, atomic_write_text, default_file_mode
from finalmlp.models import build_model
from finalmlp.models.base import CTRModel
from finalmlp.schema import ExperimentConfig

FORMAT_VERSION = 2  # written when calibration.json is present; else 1
READ_VERSIONS = (1, 2)
CONTENT_FILES = ("config.json", "processor.json", "model.safetensors")


@dataclass
class Run:
    path: Path
    config: ExperimentConfig
    processor: FeatureProcessor
    model: CTRModel
    metrics: dict[str, Any]
    calibration: Calibration | None = None
    content_sha256: str = ""  # as verified on load

    @property
    def tasks(self) -> list[str]:
        """The task names, in the order of the model's outputs."""
        return self.config.data.task_names

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """Model probabilities (N, T) as the bundle serves them: through its calibration (one
        calibrator per task), if any.

        Every scoring path (evaluate, batch predict with either backend, the HTTP service)
        passes the model's probabilities through here once.
        """
        return probs if self.calibration is None else self.calibration.transform(probs)


def save_run(
    out: Path,
    config: ExperimentConfig,
    processor: FeatureProcessor,
    model: CTRModel,
    metrics: dict[str, Any],
    calibration: Calibration | None = None,
) -> None:
    """Write the run directory atomically (a crash leaves the previous one intact).

    Raises:
        ConfigError: ``out`` exists and is neither empty nor a run directory (never deleted).
    """
    out = Path(out)
    check_run_target(out)
    with atomic_directory(out) as tmp:
        atomic_write_text(tmp / "config.json", config.model_dump_json(indent=2))
        processor.save(tmp / "processor.json")
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        default_file_mode(tmp / "model.safetensors")  # 0600 otherwise; the other files 0644
        if calibration is not None:
            _write_calibration(tmp, calibration)
        atomic_write_text(tmp / "metrics.json", json.dumps(json_safe(metrics), indent=2))
        manifest = {"finalmlp": __version__, "torch": torch.__version__, "model": config.model.name}
        _write_manifest(tmp, manifest)


def replace_calibration(run: Run, calibration: Calibration | None, metrics: dict[str, Any]) -> None:
    """Give a saved run a new calibration (None: none) and metrics, swapping the directory
    whole: a staged copy (files hard-linked where possible) gets the new calibration.json,
    metrics.json and manifest.json, then replaces the run. Weights are untouched, so an ONNX
    export stays current.

    Raises:
        DataError: the run directory changed since ``run`` was loaded from it.
    """
    with atomic_directory(run.path) as tmp:
        shutil.copytree(run.path, tmp, copy_function=_link_or_copy, dirs_exist_ok=True)
        if not run.content_sha256 or content_hash(tmp) != run.content_sha256:
            raise DataError(f"{run.path} changed since it was loaded; run the command again")
        (tmp / CALIBRATION_FILE).unlink(missing_ok=True)
        if calibration is not None:
            _write_calibration(tmp, calibration)
        atomic_write_text(tmp / "metrics.json", json.dumps(json_safe(metrics), indent=2))
        _write_manifest(tmp, _read_json(tmp / "manifest.json", tmp))


def _link_or_copy(source: str, target: str) -> None:
    # Every writer of a run replaces files by renaming, never in place: sharing is safe.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_calibration(directory: Path, calibration: Calibration) -> None:
    text = json.dumps(calibration.to_dict(), indent=2)
    atomic_write_text(directory / CALIBRATION_FILE, text)


def _write_manifest(directory: Path, base: dict[str, Any]) -> None:
    """``base`` with the format version and both hashes of ``directory``'s files."""
    model_sha256, content_sha256 = _hashes(directory)
    calibrated = (directory / CALIBRATION_FILE).is_file()
    manifest = {
        **base,
        "format_version": FORMAT_VERSION if calibrated else 1,
        "model_sha256": model_sha256,
        "content_sha256": content_sha256,
    }
    atomic_write_text(directory / "manifest.json", json.dumps(manifest, indent=2))


def check_run_target(out: Path) -> None:
    """``out`` may be written: missing, an empty directory, or an earlier run directory."""
    if not out.exists():
        return
    if out.is_dir() and (
        (out / "manifest.json").is_file() or {p.name for p in out.iterdir()} <= {"checkpoints"}
    ):
        return  # an earlier run, an empty folder, or a run that was stopped mid-way
    raise ConfigError(
        f"{out} exists and is not a finalmlp run directory; refusing to replace it. "
        "Pass a new or empty --out directory"
    )


def json_safe(value: Any) -> Any:
    """NaN and infinities (e.g. AUC of a single-class split) become null: valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def content_hash(directory: Path) -> str:
    """sha256 over the files that define the scores (see the module docstring)."""
    return _hashes(directory)[1]


def _hashes(directory: Path) -> tuple[str, str]:
    """``(model_sha256, content_sha256)``: config, processor and weights (a missing file
    hashes as missing), then calibration.json when present (none: the same hash)."""
    digest = hashlib.sha256()
    for name in CONTENT_FILES:
        file = directory / name
        digest.update(name.encode())
        digest.update(file.read_bytes() if file.is_file() else b"<missing>")
    model_sha256 = digest.hexdigest()
    calibration = directory / CALIBRATION_FILE
    if calibration.is_file():
        digest.update(CALIBRATION_FILE.encode())
        digest.update(calibration.read_bytes())
    return model_sha256, digest.hexdigest()


def load_run(path: str | Path) -> Run:
    """Load a run directory written by ``finalmlp train`` (model in eval mode, on the CPU).

    Raises:
        DataError: not a run directory, another format version, or files that do not match
            their manifest (edited, truncated or mixed from different runs).
    """
    path = Path(path)
    manifest = _read_json(path / "manifest.json", path)
    version = manifest.get("format_version")
    if version not in READ_VERSIONS:
        raise DataError(
            f"{path} has run format version {version!r}; this finalmlp {__version__} reads "
            f"versions {list(READ_VERSIONS)}. Re-train, or use the finalmlp version that wrote it"
        )
    model_sha256, content_sha256 = _hashes(path)
    if (
        manifest.get("content_sha256") != content_sha256
        or manifest.get("model_sha256", model_sha256) != model_sha256
    ):
        raise DataError(
            f"{path}: config.json, processor.json, model.safetensors or calibration.json do "
            "not match manifest.json (edited, truncated, removed or copied from another run); "
            "re-train or restore the directory"
        )
    try:
        config = ExperimentConfig.model_validate(_read_json(path / "config.json", path))
        processor = FeatureProcessor.load(path / "processor.json")
        model = build_model(processor.layout, config.model, len(config.data.tasks))
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (ValidationError, OSError, SafetensorError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load the run in {path}: {first}") from None
    model.eval()
    metrics = _read_json(path / "metrics.json", path)
    calibration = _load_calibration(path, config.data.task_names)
    return Run(path, config, processor, model, metrics, calibration, content_sha256)


def _load_calibration(path: Path, tasks: list[str]) -> Calibration | None:
    file = path / CALIBRATION_FILE
    if not file.is_file():
        return None
    return Calibration.from_dict(_read_json(file, path), tasks, str(file))


def _read_json(file: Path, run_dir: Path) -> dict[str, Any]:
    if not file.is_file():
        raise DataError(
            f"{run_dir} is not a finalmlp run directory ({file.name} missing); "
            "pass the --out directory of `finalmlp train`"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{file} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at position "
            f"{exc.start}); the run directory is damaged: re-train or restore it"
        ) from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(f"{file} must hold a JSON object")
    return data
