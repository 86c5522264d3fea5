"""A tiny base config and tune file on the synthetic recipe: a 4-trial tune takes seconds."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

BASE: dict[str, Any] = {
    "data": {
        "recipe": "synthetic",
        "synthetic": {
            "num_rows": 2000,
            "num_categorical": 4,
            "num_numeric": 1,
            "max_cardinality": 50,
            "seed": 1,
        },
        "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
        "cache_dir": "cache",  # relative to base.yaml: best.yaml must rebase it
    },
    "model": {
        "name": "finalmlp",
        "embedding_dim": 4,
        "mlp1": {"hidden_units": [16], "dropout": 0.2, "batch_norm": True},
        "mlp2": {"hidden_units": [16], "dropout": 0.2, "batch_norm": True},
        "fs_hidden_units": [16],
        "num_heads": 2,
    },
    "train": {
        "batch_size": 256,
        "learning_rate": 1.0e-3,
        "max_epochs": 2,
        "num_threads": 1,
        "progress": False,
    },
}
SPACE: dict[str, Any] = {
    "model.mlp1.dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "train.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    "model.num_heads": {"type": "categorical", "choices": [1, 2, 4]},
    "model.mlp2.hidden_units": {"type": "categorical", "choices": [[16], [32, 16]]},
}


def write_tune(
    folder: Path,
    space: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    **keys: Any,
) -> Path:
    """base.yaml (BASE, ``train`` merged in) and tune.yaml in ``folder``; the tune file path."""
    base = copy.deepcopy(BASE)
    base["train"].update(train or {})
    (folder / "base.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    tune = {
        "base": "base.yaml",
        "metric": "auc",
        "sampler": {"seed": 1, "n_startup_trials": 2},
        "space": SPACE if space is None else space,
        **keys,
    }
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(tune, sort_keys=False), encoding="utf-8")
    return path


def quiet(message: str) -> None:
    del message
