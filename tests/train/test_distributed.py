"""torchrun with 2 CPU processes (gloo, loopback) trains exactly what 1 process trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

pytestmark = pytest.mark.distributed

CONFIG = {
    "data": {
        "recipe": "synthetic",
        "synthetic": {"num_rows": 3000, "num_categorical": 6, "num_numeric": 2, "seed": 11},
    },
    "model": {  # no dropout and no BatchNorm: both depend on how rows are split over ranks
        "name": "finalmlp",
        "embedding_dim": 4,
        "mlp1": {"hidden_units": [32, 16]},
        "mlp2": {"hidden_units": [16]},
        "fs_hidden_units": [16],
        "fs1_context": ["c0"],
        "num_heads": 4,
    },
    "train": {
        "batch_size": 251,  # odd: every global batch splits 126 + 125 over 2 ranks
        "max_epochs": 3,
        "embedding_l2": 0.01,
        "net_l2": 0.001,
        "learning_rate": 0.003,
        "device": "cpu",
        "num_threads": 1,
        "progress": False,
        "seed": 5,
    },
}


# Two tasks, the second labelled on about a fifth of the rows (conversions after clicks):
# each step's per-task denominators are counted over the global batch (an all-reduce).
TWO_TASKS = {
    **CONFIG,
    "data": {
        **CONFIG["data"],
        "synthetic": {**CONFIG["data"]["synthetic"], "conversion": True},
        "labels": [{"name": "click", "column": "label"}, {"name": "conversion", "weight": 2.0}],
    },
    "train": {**CONFIG["train"], "monitor": {"click.auc": 1, "conversion.auc": 1}},
}


def train(tmp_path: Path, processes: int, base: dict | None = None) -> Path:
    base = base or CONFIG
    config = {**base, "data": {**base["data"], "cache_dir": str(tmp_path / "cache")}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / f"run{processes}"
    launcher = [sys.executable, "-m", "finalmlp.cli.main"]
    if processes > 1:
        launcher = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={processes}", "-m", "finalmlp.cli.main",
        ]  # fmt: skip
    done = subprocess.run(
        [*launcher, "train", str(path), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.parametrize("base", [CONFIG, TWO_TASKS], ids=["one_task", "two_tasks_masked"])
def test_two_ranks_train_the_same_parameters_as_one(tmp_path: Path, base: dict) -> None:
    one, two = train(tmp_path, 1, base), train(tmp_path, 2, base)
    weights1 = load_file(str(one / "model.safetensors"))
    weights2 = load_file(str(two / "model.safetensors"))
    assert weights1.keys() == weights2.keys()
    for name, value in weights1.items():
        torch.testing.assert_close(weights2[name], value, rtol=0, atol=1e-5, msg=name)
    metrics1 = json.loads((one / "metrics.json").read_text())
    metrics2 = json.loads((two / "metrics.json").read_text())
    assert metrics2["processes"] == 2 and metrics1["processes"] == 1
    assert metrics2["valid"]["auc"] == pytest.approx(metrics1["valid"]["auc"], abs=1e-6)
    assert metrics2["test"]["auc"] == pytest.approx(metrics1["test"]["auc"], abs=1e-6)
    if base is TWO_TASKS:
        assert metrics2["test"]["conversion.auc"] == pytest.approx(
            metrics1["test"]["conversion.auc"], abs=1e-6
        )
    history1 = [(h["step"], h["improved"]) for h in metrics1["history"]]
    assert history1 == [(h["step"], h["improved"]) for h in metrics2["history"]]
    for h1, h2 in zip(metrics1["history"], metrics2["history"], strict=True):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-5)
