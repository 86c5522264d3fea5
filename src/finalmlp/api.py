"""The Python API: train, load, score, evaluate and export runs from a notebook or a script.

It is the command line without the command line: the same config parsing
(:mod:`finalmlp.config`), training (:func:`finalmlp.train.run.train_from_config`), run
directory (:mod:`finalmlp.bundle`), record cleaning (:class:`finalmlp.serve.scorer.Scorer`),
value checks (:mod:`finalmlp.data.values`) and ONNX export (:mod:`finalmlp.serve.onnx`).
Errors are :class:`finalmlp.errors.FinalMLPError` subclasses, never ``SystemExit``.

Example:
    >>> import finalmlp
    >>> run = finalmlp.train("configs/demo.yaml", out="runs/demo")
    >>> run.predict(frame)  # (N,) probabilities, input order; (N, T) with several tasks
    >>> run.evaluate(frame)  # {'auc': ..., 'logloss': ..., ...}
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from finalmlp import bundle
from finalmlp.errors import ConfigError, DataError, SchemaError
from finalmlp.schema import ExperimentConfig

ConfigLike = str | os.PathLike[str] | Mapping[str, Any] | ExperimentConfig
Rows = pl.DataFrame | Sequence[Mapping[str, Any]] | Any  # Any: a pandas DataFrame


class Run:
    """A trained run directory, loaded: score, evaluate and export it.

    Attributes:
        path: the run directory.
        config: the resolved :class:`~finalmlp.schema.ExperimentConfig` it was trained with.
        metrics: ``metrics.json`` (valid/test metrics, epochs, history, calibration effect).
        tasks: the task names, in the order of the columns of a multi-task prediction.
    """

    def __init__(self, loaded: bundle.Run) -> None:
        self._run = loaded

    @property
    def path(self) -> Path:
        return self._run.path

    @property
    def config(self) -> ExperimentConfig:
        return self._run.config

    @property
    def metrics(self) -> dict[str, Any]:
        return self._run.metrics

    @property
    def tasks(self) -> list[str]:
        return self._run.tasks

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.config.model.name!r}, tasks={self.tasks})"

    def predict(self, data: Rows, *, calibrated: bool = True) -> np.ndarray:
        """Click probabilities for raw rows, in input order.

        Args:
            data: a Polars or pandas DataFrame holding the feature columns (others are
                ignored), or a list of dicts (field -> raw value, as the HTTP service takes).
            calibrated: through the run's calibration when it has one (as ``predict`` does).

        Returns:
            float64 array: (N,) for a one-task run, (N, T) in the order of :attr:`tasks`.

        Raises:
            SchemaError: a feature column is missing from the frame.
            DataError: a value that cannot be parsed (its row and column named).
            RecordError: a dict record that cannot be scored (its index and field named).
        """
        split = self._encode(data, labelled=False)
        return self._shaped(self._probabilities(split, calibrated))

    def evaluate(self, data: Rows, *, calibrated: bool = True) -> dict[str, Any]:
        """AUC, logloss and the other metrics of ``finalmlp evaluate`` on labelled rows (the
        label columns of the config present, 0/1 or as ``label_map`` maps them).

        Raises:
            SchemaError: a label or feature column is missing.
            DataError: a label or value that cannot be parsed, or a task with one class.
        """
        from finalmlp.metrics import task_metrics

        split = self._encode(data, labelled=True)
        assert split.label is not None
        probs = self._probabilities(split, calibrated)
        return task_metrics(split.label, probs, self.tasks, split.group)

    def export_onnx(self, path: str | os.PathLike[str] | None = None, *, opset: int = 18) -> Path:
        """Write the model as ONNX (encoded ids in, probabilities (B, T) out), checked against
        PyTorch's scores. Without ``path``: ``RUN_DIR/model.onnx`` and its side file, which
        ``predict --backend onnx`` then uses. Returns the file written.

        Raises:
            ConfigError: an opset below 17.
            ExportError: the model cannot be exported, or the graph's scores differ.
        """
        from finalmlp.serve.onnx import export_onnx, write_onnx

        if opset < 17:
            raise ConfigError(f"opset must be 17 or later, got {opset}")
        if path is None:
            return export_onnx(self.path, opset=opset).path
        target = Path(path)
        write_onnx(self._run, target, opset)
        return target

    # ------------------------------------------------------------------------- internals
    def _encode(self, data: Rows, *, labelled: bool) -> Any:
        from finalmlp.data.frames import encode_frame

        config = self.config.data
        frame = self._frame(data, labelled)
        needed = [f.column for f in config.features]
        if labelled:
            needed = [*config.label_columns, *needed]
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            what = "label and feature" if labelled else "feature"
            raise SchemaError(
                f"column(s) {missing} not found in the rows given; the run's {what} columns "
                f"are {list(dict.fromkeys(needed))}"
            )
        frame = _parsed(frame, config, labelled)
        return encode_frame(self._run.processor, frame, config, labelled=labelled)

    def _frame(self, data: Rows, labelled: bool) -> pl.DataFrame:
        if isinstance(data, pl.DataFrame):
            return data
        if _is_pandas(data):
            try:
                return pl.from_pandas(data)
            except Exception as exc:  # pyarrow cannot convert a column (mixed objects)
                raise DataError(f"cannot read the pandas DataFrame: {exc}") from None
        if isinstance(data, Sequence) and not isinstance(data, str | bytes):
            return self._records_frame(data, labelled)
        raise DataError(
            "rows must be a Polars or pandas DataFrame, or a list of dicts; "
            f"got {type(data).__name__}"
        )

    def _records_frame(self, records: Sequence[Mapping[str, Any]], labelled: bool) -> pl.DataFrame:
        """Records cleaned as the HTTP service cleans them; labels kept as text to parse."""
        from finalmlp.serve.scorer import RecordError, Scorer

        scorer = Scorer(self._run, unknown_fields="ignore")
        frame = scorer.records_frame(records)
        if not labelled:
            return frame
        labels = {}
        for column in self.config.data.label_columns:
            values = []
            for index, record in enumerate(records):
                if column not in record:
                    raise RecordError(index, column, "label field is missing")
                value = record[column]
                values.append(None if value is None else str(value))
            labels[column] = pl.Series(column, values, dtype=pl.Utf8)
        return frame.with_columns(**labels)

    def _probabilities(self, split: Any, calibrated: bool) -> np.ndarray:
        from finalmlp.inference import predict_proba

        probs = predict_proba(self._run.model, split, self.config.train.eval_batch_size)
        return self._run.calibrate(probs) if calibrated else probs

    def _shaped(self, probs: np.ndarray) -> np.ndarray:
        return probs[:, 0] if len(self.tasks) == 1 else probs


def _is_pandas(data: Any) -> bool:
    return type(data).__module__.startswith("pandas") and hasattr(data, "columns")


def _parsed(frame: pl.DataFrame, config: Any, labelled: bool) -> pl.DataFrame:
    """Numeric columns (and labels) parsed and checked as the readers do; the first bad value
    is a DataError naming its row (1-based, as a user counts rows of a frame)."""
    from finalmlp.data.values import parse_values

    parsed, checks = parse_values(frame, config, label=labelled, finite=labelled)
    if checks:
        row, _, check = min((int(c.bad.arg_max() or 0), i, c) for i, c in enumerate(checks))
        raise DataError(check.message(row, f"row {row + 1} of the rows given"))
    return parsed


def load_run(path: str | os.PathLike[str]) -> Run:
    """Load a run directory written by :func:`train` or ``finalmlp train``.

    Raises:
        DataError: not a run directory, or files that do not match their manifest.
    """
    return Run(bundle.load_run(Path(path)))


def train(
    config: ConfigLike,
    out: str | os.PathLike[str],
    *,
    seed: int | None = None,
    resume: bool = False,
    progress: bool = False,
    report: bool = False,
) -> Run:
    """Train a model and write its run directory to ``out``; returns the loaded run.

    Args:
        config: a YAML config file, a dict with the same sections (``data``, ``model``,
            ``train``; relative paths are relative to the working directory), or an
            :class:`~finalmlp.schema.ExperimentConfig`.
        out: the run directory to write (new, empty, or an earlier run's).
        seed: overrides ``train.seed``.
        resume: continue from the newest checkpoint in ``out``.
        progress: show the live progress bar (off by default: notebooks and logs).
        report: also write ``out/report.html``.

    A run whose probabilities are worse than predicting the base rate, or badly calibrated,
    issues a :class:`finalmlp.train.probability.ProbabilityWarning` (see ``metrics.json``'s
    ``probability_check``).

    Raises:
        ConfigError: an invalid config (the key named), or an ``out`` that is not a run.
        DataError, SchemaError: the data cannot be read as the config describes it.
        TrainingError: the loss became NaN or infinite.
    """
    from finalmlp.train.run import train_from_config

    cfg = _config(config)
    updates: dict[str, Any] = {"progress": progress and sys.stderr.isatty()}
    if seed is not None:
        updates["seed"] = seed
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=updates)})
    out_dir = Path(out)
    metrics = train_from_config(cfg, out_dir, resume=resume)
    _warn_probabilities(metrics)
    if report:
        from finalmlp.report import write_report

        write_report(out_dir)
    return load_run(out_dir)


def _config(config: ConfigLike) -> ExperimentConfig:
    from finalmlp.config import load_config, parse_config

    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, Mapping):
        return parse_config(dict(config), base_dir=Path.cwd(), origin="config dict")
    if isinstance(config, str | os.PathLike):
        return load_config(Path(config))
    raise ConfigError(
        "config must be a YAML file path, a dict or an ExperimentConfig; "
        f"got {type(config).__name__}"
    )


def _warn_probabilities(metrics: dict[str, Any]) -> None:
    from finalmlp.train.probability import ProbabilityWarning, probability_problems

    for line in probability_problems(metrics):
        warnings.warn(line, ProbabilityWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The stacklevel of the first frame outside this package: the user's call."""
    package = str(Path(__file__).parent)
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def infer_config(
    path: str | os.PathLike[str], *, label: str | None = None, **options: Any
) -> dict[str, Any]:
    """Propose a whole config (``data``, ``model``, ``train``, sized to the data) for a data
    file, as ``finalmlp schema infer`` does; review it, then pass it to :func:`train`.

    Args:
        path: a CSV/TSV/Parquet/libsvm/libFFM file.
        label: the label column (guessed when None).
        options: more of :func:`finalmlp.features.infer.infer_schema`'s arguments (``fmt``,
            ``has_header``, ``separator``, ``sample_rows``, ``field_map``, ``valid``, ``test``).

    Raises:
        DataError, SchemaError: the file cannot be read, or has no label or feature column.
    """
    from finalmlp.features.infer import infer_schema

    return infer_schema(Path(path), label=label, **options).config()


def synthetic_data(num_rows: int = 10_000, *, seed: int = 2023, **options: Any) -> pl.DataFrame:
    """Rows of the built-in CTR-like generator (the ``synthetic`` recipe's data): ``label``,
    categorical ``c0..c7`` and numeric ``n0..n2``. The same ``seed`` gives the same hidden
    click model, so rows drawn for training and for scoring belong together.

    ``options``: more of :class:`~finalmlp.schema.SyntheticOptions` (``num_categorical``...).

    Raises:
        ConfigError: an invalid option.
    """
    from pydantic import ValidationError

    from finalmlp.config import format_validation_error
    from finalmlp.data.synthetic import generate_synthetic
    from finalmlp.schema import SyntheticOptions

    try:
        settings = SyntheticOptions(num_rows=num_rows, seed=seed, **options)
    except ValidationError as exc:
        raise ConfigError(f"synthetic_data: {format_validation_error(exc)}") from None
    return generate_synthetic(settings)
