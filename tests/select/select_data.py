"""A small click log where some fields carry the label and the others are pure noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

SIGNAL = ("s0", "s1", "s2")
NOISE = ("n0", "n1", "n2")


def write_noisy_csv(path: Path, rows: int = 6000, seed: int = 0) -> Path:
    """Columns: label, s0-s2 (categorical, strong per-value effects), x_signal (numeric, in the
    logit), n0-n2 (categorical, independent of the label), x_noise (numeric noise)."""
    rng = np.random.default_rng(seed)
    logit = np.full(rows, -0.5)
    columns: dict[str, Any] = {}
    for name in SIGNAL:
        ids = rng.integers(0, 8, rows)
        effects = rng.normal(0, 1.5, 8)
        logit += effects[ids]
        columns[name] = [f"{name}_{i}" for i in ids]
    signal = rng.normal(0, 1, rows)
    logit += 1.5 * signal
    for name in NOISE:
        columns[name] = [f"{name}_{i}" for i in rng.integers(0, 30, rows)]
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    frame = pl.DataFrame(
        {"label": label, **columns, "x_signal": signal, "x_noise": rng.normal(0, 1, rows)}
    )
    frame.write_csv(path)
    return path


def noisy_config(data: Path, cache: Path, model: dict[str, Any], **select: Any) -> dict[str, Any]:
    """A raw config (for parse_config) over write_noisy_csv's file."""
    features = [{"name": n, "type": "categorical"} for n in SIGNAL + NOISE]
    features += [
        {"name": "x_signal", "type": "numeric", "transform": "standard"},
        {"name": "x_noise", "type": "numeric", "transform": "standard"},
    ]
    return {
        "data": {
            "train": str(data),
            "features": features,
            "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
            "cache_dir": str(cache),
        },
        "model": model,
        "train": {
            "batch_size": 256,
            "learning_rate": 3e-3,
            "max_epochs": 4,
            "patience": 1,
            "progress": False,
            "seed": 3,
        },
        "select": {"epochs": 4, "rewind_epoch": 1, "final_temperature": 50, **select},
    }
