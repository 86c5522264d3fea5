"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from finalmlp.train.checkpoint import INDEX, CheckpointStore

CONFIG = {
    "data": {"recipe": "synthetic", "synthetic": {"num_rows": 4000, "seed": 3}},
    "model": {  # dropout and BatchNorm on: the RNG state and running stats must resume too
        "name": "finalmlp",
        "embedding_dim": 4,
        "mlp1": {"hidden_units": [32], "dropout": 0.2, "batch_norm": True},
        "mlp2": {"hidden_units": [16], "dropout": 0.2, "batch_norm": True},
        "fs_hidden_units": [16],
        "fs1_context": ["c0"],
        "num_heads": 4,
    },
    "train": {
        "batch_size": 128,  # 25 steps per epoch
        "max_epochs": 4,
        "patience": 3,
        "checkpoint_every_steps": 7,
        "device": "cpu",
        "num_threads": 1,
        "progress": False,
        "seed": 9,
    },
}


TWO_TASKS = {  # masked conversion labels: the per-task loss must resume exactly too
    **CONFIG,
    "data": {
        **CONFIG["data"],
        "synthetic": {**CONFIG["data"]["synthetic"], "conversion": True},
        "labels": [{"name": "click", "column": "label"}, {"name": "conversion"}],
    },
}


def write_config(tmp_path: Path, base: dict | None = None) -> Path:
    base = base or CONFIG
    config = {**base, "data": {**base["data"], "cache_dir": str(tmp_path / "cache")}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "finalmlp.cli.main", "train", str(config), "--out", str(out),
            "--no-progress", *extra]  # fmt: skip


def comparable(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    for record in metrics["history"]:
        record.pop("seconds")
    keep = ("valid", "test", "epochs", "steps", "best_epoch", "stopped_early", "history")
    return {k: metrics[k] for k in keep}


@pytest.mark.parametrize("base", [CONFIG, TWO_TASKS], ids=["one_task", "two_tasks"])
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path: Path, base: dict) -> None:
    config = write_config(tmp_path, base)
    subprocess.run(train_command(config, tmp_path / "full"), check=True, capture_output=True)

    out = tmp_path / "killed"
    index = out / "checkpoints" / INDEX
    kill_after = random.Random(os.getpid()).choice([1, 2, 3])  # checkpoints written
    process = subprocess.Popen(train_command(config, out), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if index.is_file() and len(json.loads(index.read_text() or "[]")) >= min(kill_after, 2):
            steps = [e["step"] for e in json.loads(index.read_text())]
            if max(steps) >= 7 * kill_after:
                break
        time.sleep(0.01)
    if process.poll() is not None:
        pytest.fail("training finished before it could be killed; make the run longer")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "model.safetensors").exists()
    resumed = subprocess.run(
        train_command(config, out, "--resume"), check=True, capture_output=True, text=True
    )
    assert "resuming from step" in resumed.stderr

    full, again = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(out / "model.safetensors")),
    )
    for name, value in full.items():
        assert torch.equal(again[name], value), name
    assert comparable(out) == comparable(tmp_path / "full")


def test_corrupted_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    from finalmlp.train.checkpoint import Checkpoint

    store.save(Checkpoint(7, 1, 7, {"w": torch.ones(3)}))
    newest = store.save(Checkpoint(14, 1, 14, {"w": torch.full((3,), 2.0)}))
    newest.write_bytes(newest.read_bytes()[:-20])  # truncated
    with pytest.warns(UserWarning, match="truncated or corrupted"):
        checkpoint = store.latest()
    assert checkpoint is not None and checkpoint.step == 7
    assert torch.equal(checkpoint.state["w"], torch.ones(3))


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path) -> None:
    from finalmlp.train.checkpoint import Checkpoint

    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        store.save(Checkpoint(step, 1, step, {"w": torch.tensor([float(step)])}))
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == [
        "step-000000003.pt",
        "step-000000004.pt",
    ]
    latest = store.latest()
    assert latest is not None and latest.step == 4
