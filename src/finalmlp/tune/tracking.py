"""Optional experiment tracking with MLflow (``pip install mlflow``); a no-op otherwise.

MLflow is imported only when asked for (``--mlflow``): it is not a dependency. Where runs go
is MLflow's own setting (``MLFLOW_TRACKING_URI``, default ``./mlruns``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from finalmlp.errors import ConfigError
from finalmlp.schema import ExperimentConfig


def require_mlflow() -> ModuleType:
    """The ``mlflow`` module, or a ConfigError saying how to install it."""
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        raise ConfigError(
            "--mlflow needs MLflow, which is not installed: pip install mlflow"
        ) from None


class Tracker(Protocol):
    """What a search reports: one nested run per trial, files at the end."""

    def start_trial(self, number: int, params: dict[str, Any]) -> None: ...
    def log_validation(self, step: int, metrics: dict[str, float]) -> None: ...
    def end_trial(self, state: str, metrics: dict[str, float]) -> None: ...
    def log_files(self, paths: list[Path]) -> None: ...
    def close(self) -> None: ...


class NullTracker:
    """Tracks nothing."""

    def start_trial(self, number: int, params: dict[str, Any]) -> None:
        del number, params

    def log_validation(self, step: int, metrics: dict[str, float]) -> None:
        del step, metrics

    def end_trial(self, state: str, metrics: dict[str, float]) -> None:
        del state, metrics

    def log_files(self, paths: list[Path]) -> None:
        del paths

    def close(self) -> None:
        pass


_MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


class MlflowTracker:
    """A parent run for the search, a nested run per trial (params, per-epoch validation
    metrics, final metrics, state tag), and the report files as artifacts of the parent."""

    def __init__(self, run_name: str, tags: dict[str, str] | None = None) -> None:
        self.mlflow = require_mlflow()
        self.mlflow.start_run(run_name=run_name, tags=tags or {})

    def start_trial(self, number: int, params: dict[str, Any]) -> None:
        self.mlflow.start_run(run_name=f"trial {number}", nested=True)
        self.mlflow.log_params({key: _param_text(value) for key, value in params.items()})
        self.mlflow.set_tag("trial", str(number))

    def log_validation(self, step: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics({f"valid_{k}": v for k, v in metrics.items()}, step=step)

    def end_trial(self, state: str, metrics: dict[str, float]) -> None:
        if metrics:
            self.mlflow.log_metrics(metrics)
        self.mlflow.set_tag("state", state)
        self.mlflow.end_run(status=_MLFLOW_STATUS.get(state, "FAILED"))

    def log_files(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.mlflow.log_artifact(str(path))

    def close(self) -> None:
        self.mlflow.end_run()


def log_training_run(config: ExperimentConfig, metrics: dict[str, Any], out: Path) -> None:
    """Log one ``finalmlp train`` run: config as params, per-validation and final metrics,
    and the run's report.html when there is one."""
    mlflow = require_mlflow()
    with mlflow.start_run(run_name=out.name):
        mlflow.log_params(flatten_config(config))
        for record in metrics.get("history", []):
            values = {f"valid_{k}": v for k, v in record["metrics"].items()}
            values["train_loss"] = record["train_loss"]
            mlflow.log_metrics(values, step=record["step"])
        mlflow.log_metrics(final_metrics(metrics))
        mlflow.set_tag("run_dir", str(out))
        report = out / "report.html"
        if report.is_file():
            mlflow.log_artifact(str(report))


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``valid_auc``, ``test_logloss``, ... from a run's metrics (NaN-free numbers only)."""
    flat: dict[str, float] = {}
    for split in ("valid", "test"):
        for name, value in (metrics.get(split) or {}).items():
            if isinstance(value, int | float) and value == value:
                flat[f"{split}_{name}"] = float(value)
    return flat


def flatten_config(config: ExperimentConfig) -> dict[str, str]:
    """Dotted key -> text for every setting (the feature list as a count: too long a param)."""
    dump = config.model_dump(mode="json")
    dump["data"]["features"] = len(dump["data"]["features"])
    flat: dict[str, str] = {}
    _flatten(dump, "", flat)
    return flat


def _flatten(tree: dict[str, Any], prefix: str, flat: dict[str, str]) -> None:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            _flatten(value, f"{prefix}{key}.", flat)
        else:
            flat[f"{prefix}{key}"] = _param_text(value)


def _param_text(value: Any) -> str:
    return str(value)
