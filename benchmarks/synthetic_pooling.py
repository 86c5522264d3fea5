"""Mean against attention pooling on the synthetic event log (docs/sequences.md).

The synthetic recipe with ``histories: true`` draws each label from the candidate's relevance
to the user's earlier clicks. DNN and FinalMLP (small) are trained with the two history
features mean-pooled, then attention-pooled, over 3 seeds; prints the test AUCs per setting
and, at the end, all of them as JSON.

Run (benchmarks only under the lock):
    flock /tmp/bench.lock nice python benchmarks/synthetic_pooling.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from finalmlp.config import parse_config
from finalmlp.data.recipes import apply_recipe
from finalmlp.train.run import train_from_config

DATA = {"recipe": "synthetic", "synthetic": {"num_rows": 20000, "histories": True, "seed": 5}}
MODELS: list[dict[str, Any]] = [
    {"name": "dnn", "embedding_dim": 8, "mlp": {"hidden_units": [64, 32]}},
    {"name": "finalmlp", "embedding_dim": 8, "num_heads": 2, "mlp1": {"hidden_units": [64]},
     "mlp2": {"hidden_units": [32]}, "fs_hidden_units": [32]},
]  # fmt: skip
TRAIN = {"batch_size": 256, "max_epochs": 10, "learning_rate": 0.003, "progress": False}
SEEDS = (1, 2, 3)


def features(pooling: str) -> list[dict[str, Any]]:
    """The recipe's features with its attention-pooled histories set to ``pooling``."""
    out = []
    for feature in apply_recipe(dict(DATA))["features"]:
        feature = dict(feature)
        if feature.get("pooling") == "attention" and pooling != "attention":
            feature["pooling"] = pooling
            feature.pop("target", None)
        out.append(feature)
    return out


def main() -> None:
    results: dict[str, list[float]] = {}
    for pooling in ("mean", "attention"):
        for model in MODELS:
            aucs = []
            for seed in SEEDS:
                with tempfile.TemporaryDirectory() as tmp:
                    data = {**DATA, "features": features(pooling), "cache_dir": f"{tmp}/cache"}
                    train = {**TRAIN, "seed": seed}
                    config = parse_config({"data": data, "model": model, "train": train})
                    metrics = train_from_config(config, Path(tmp) / "run")
                aucs.append(round(metrics["test"]["auc"], 4))
            key = f"{model['name']}-{pooling}"
            results[key] = aucs
            mean, std = statistics.mean(aucs), statistics.stdev(aucs)
            print(f"{key}: {aucs} -> {mean:.4f} ± {std:.4f}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
