"""Training throughput with 1 process vs N torchrun processes on a synthetic Criteo-like set.

The data: the built-in generator with Criteo's shape (13 numeric + 26 categorical fields,
Zipf ids, cardinalities up to 10^6). The model: FinalMLP with the paper's Criteo settings
(embedding 10, mlp1 [400, 400, 400], mlp2 [800], gates [800], 10 heads, batch 4096). The data
is encoded once (`finalmlp preprocess`), then each configuration trains one epoch and reports
`train_samples_per_s` from its metrics.json (wall-clock of the training steps, validation
excluded). The runs alternate (1, N, 1, N, ...) so machine drift hits both alike.

Usage:
    .venv/bin/python benchmarks/bench_distributed.py --rows 300000 --repeats 2 \
        --out docs/results/distributed_cpu.json
    # on a GPU machine: --device cuda --procs 1 (one process per GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

CRITEO_LIKE_MODEL = {
    "name": "finalmlp",
    "embedding_dim": 10,
    "mlp1": {"hidden_units": [400, 400, 400], "dropout": 0.2, "batch_norm": True},
    "mlp2": {"hidden_units": [800], "dropout": 0.2, "batch_norm": True},
    "fs_hidden_units": [800],
    "fs1_context": [f"n{i}" for i in range(13)],
    "fs2_context": ["c5"],
    "num_heads": 10,
}


def write_config(folder: Path, rows: int, device: str, threads: int) -> Path:
    config = {
        "data": {
            "recipe": "synthetic",
            "synthetic": {
                "num_rows": rows,
                "num_categorical": 26,
                "num_numeric": 13,
                "max_cardinality": 1_000_000,
                "seed": 2023,
            },
            "split": {"valid_fraction": 0.02, "test_fraction": 0.02, "seed": 1},
            "cache_dir": str(folder / "cache"),
        },
        "model": CRITEO_LIKE_MODEL,
        "train": {
            "batch_size": 4096,
            "max_epochs": 1,
            "embedding_l2": 1e-5,
            "device": device,
            "num_threads": threads,
            "progress": False,
        },
    }
    path = folder / f"criteo_like_{threads}t.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def train(folder: Path, config: Path, procs: int, tag: str) -> dict[str, Any]:
    out = folder / f"run_{tag}"
    cli = ["-m", "finalmlp.cli.main", "train", str(config), "--out", str(out), "--no-progress"]
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    wall = run([*launcher, *cli])
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "processes": procs,
        "train_samples_per_s": metrics["train_samples_per_s"],
        "valid_auc": metrics["valid"]["auc"],
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        single = write_config(folder, args.rows, args.device, cores)
        multi = write_config(folder, args.rows, args.device, max(1, cores // args.procs))
        preprocess_s = run([sys.executable, "-m", "finalmlp.cli.main", "preprocess", str(single)])
        runs = []
        for repeat in range(args.repeats):
            runs.append(train(folder, single, 1, f"1_{repeat}"))
            if args.procs > 1:
                runs.append(train(folder, multi, args.procs, f"{args.procs}_{repeat}"))
    report = summarize(runs, args, cores, preprocess_s)
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def summarize(
    runs: list[dict[str, Any]], args: argparse.Namespace, cores: int, preprocess_s: float
) -> dict[str, Any]:
    def best(procs: int) -> float:
        return max(r["train_samples_per_s"] for r in runs if r["processes"] == procs)

    report: dict[str, Any] = {
        "benchmark": "bench_distributed",
        "machine": {
            "platform": platform.platform(),
            "cpu_cores": cores,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "commit": _commit(),
        "rows": args.rows,
        "device": args.device,
        "preprocess_s": preprocess_s,
        "runs": runs,
        "best_samples_per_s": {"1": best(1)},
    }
    if args.procs > 1:
        report["best_samples_per_s"][str(args.procs)] = best(args.procs)
        report["ratio_multi_over_single"] = best(args.procs) / best(1)
    return report


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
