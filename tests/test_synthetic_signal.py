"""The built-in dataset rewards a two-stream gated model: FinalMLP beats logistic regression."""

from __future__ import annotations

from pathlib import Path

from finalmlp.config import parse_config
from finalmlp.train.run import train_from_config


def train(model: dict, train_cfg: dict, tmp_path: Path) -> float:
    config = {
        "data": {
            "recipe": "synthetic",
            "synthetic": {"num_rows": 60_000, "max_cardinality": 2_000, "seed": 5},
            "cache_dir": str(tmp_path / "cache"),
        },
        "model": model,
        "train": {"batch_size": 1024, "progress": False, "seed": 3, **train_cfg},
    }
    return train_from_config(parse_config(config))["test"]["auc"]


def test_finalmlp_beats_logistic_regression_on_synthetic(tmp_path: Path) -> None:
    lr_auc = train({"name": "lr"}, {"learning_rate": 0.01, "max_epochs": 6}, tmp_path)
    final_auc = train(
        {
            "name": "finalmlp",
            "embedding_dim": 8,
            "mlp1": {"hidden_units": [128], "dropout": 0.1, "batch_norm": True},
            "mlp2": {"hidden_units": [64], "dropout": 0.1, "batch_norm": True},
            "fs_hidden_units": [64],
            "fs1_context": ["c0"],
            "num_heads": 4,
        },
        {"max_epochs": 6, "embedding_l2": 0.01},
        tmp_path,
    )
    print(f"LR test AUC {lr_auc:.4f}, FinalMLP test AUC {final_auc:.4f}")
    assert final_auc > lr_auc + 0.01
