"""finalmlp: FinalMLP click-through-rate prediction from raw logs to a served model.

The Python API (imported on first use, so ``import finalmlp`` and ``finalmlp --help`` stay
fast)::

    import finalmlp
    run = finalmlp.train("configs/demo.yaml", out="runs/demo")  # path, dict or ExperimentConfig
    run = finalmlp.load_run("runs/demo")
    probs = run.predict(frame)       # Polars/pandas DataFrame or list of dicts -> NumPy array
    metrics = run.evaluate(frame)    # {'auc': ..., 'logloss': ...}
    run.export_onnx("model.onnx")

Errors are :class:`finalmlp.errors.FinalMLPError` subclasses (``ConfigError``, ``DataError``,
``SchemaError``, ...), never ``SystemExit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from finalmlp.api import Run, infer_config, load_run, synthetic_data
    from finalmlp.errors import (
        ConfigError,
        DataError,
        FinalMLPError,
        NotFittedError,
        SchemaError,
        TrainingError,
    )

_API = ("Run", "load_run", "infer_config", "synthetic_data")
_ERRORS = (
    "FinalMLPError",
    "ConfigError",
    "SchemaError",
    "DataError",
    "NotFittedError",
    "TrainingError",
)
__all__ = [
    "ConfigError",
    "DataError",
    "FinalMLPError",
    "NotFittedError",
    "Run",
    "SchemaError",
    "TrainingError",
    "__version__",
    "infer_config",
    "load_run",
    "synthetic_data",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _API:
        from finalmlp import api

        return getattr(api, name)
    if name in _ERRORS:
        from finalmlp import errors

        return getattr(errors, name)
    if name == "train":  # the training package, callable as finalmlp.api.train
        import importlib

        return importlib.import_module("finalmlp.train")
    raise AttributeError(f"module 'finalmlp' has no attribute {name!r}")
