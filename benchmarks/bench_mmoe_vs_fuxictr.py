"""MMoE training speed and peak memory: finalmlp vs FuxiCTR 2.3.10's MMoE, in one run.

Both sides train MMoE on the same encoded rows of the census_income recipe (UCI
Census-Income (KDD), two tasks: income > 50K and never married; ``../shared/data``) with
FuxiCTR's own MMoE settings (``model_zoo/multitask/MMoE/config/model_config.yaml``,
``MMoE_default``): embedding 64, 8 experts [512, 256, 128], gates [128, 64], towers [128, 64],
ReLU, no BatchNorm, no dropout, batch 128, Adam 1e-3, embedding L2 1e-6, clipping at 10.

Each side runs in its own process (ours in the project's .venv, FuxiCTR's in its venv from
``benchmarks/fuxictr_env.sh``), alternating ours, FuxiCTR, FuxiCTR, ours... so drift of the
machine hits both alike, with the same thread count. Each times ``--steps`` training steps
after 20 warm-up steps over in-memory batches (shuffled once), and reports samples/s and the
process's peak RSS (data, model, optimizer state). FuxiCTR's Ray data loader is not in its
timed loop, ours does its own batch gathers: a lower bound for FuxiCTR's cost per step.

Usage (an idle machine, a few minutes):
    .venv/bin/python benchmarks/bench_mmoe_vs_fuxictr.py --repeats 2 --steps 300
    # writes docs/results/mmoe_vs_fuxictr.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import commit

ROOT = Path(__file__).resolve().parents[1]
CENSUS = ROOT / ".." / "shared" / "data" / "census_income_kdd" / "census-income.test.gz"
FUXICTR_VENV = Path(os.environ.get("FUXICTR_VENV", ROOT / "benchmarks" / ".fuxictr-venv"))
SETTINGS = {  # FuxiCTR's MMoE_default
    "embedding_dim": 64,
    "num_experts": 8,
    "expert_hidden_units": [512, 256, 128],
    "gate_hidden_units": [128, 64],
    "tower_hidden_units": [128, 64],
    "batch_size": 128,
    "learning_rate": 1e-3,
    "embedding_l2": 1e-6,
    "seed": 2023,
}


def encode(work: Path) -> Path:
    """The census training split encoded by our processor, as arrays both sides read."""
    from finalmlp.config import parse_config
    from finalmlp.data.dataset import prepare_data

    config = parse_config(
        {
            "data": {
                "recipe": "census_income",
                "train": str(CENSUS.resolve()),
                "cache_dir": str(work / "cache"),
            }
        }
    )
    data = prepare_data(config.data)
    train = data.splits["train"]
    layout = data.processor.layout
    path = work / "rows.npz"
    np.savez(
        path,
        categorical=train.features.categorical,
        numeric=train.features.numeric,
        label=np.nan_to_num(train.label),  # census labels are never blank
        table_sizes=np.array([layout.table_sizes[t] for t in layout.categorical_tables]),
    )
    return path


def ours(data_path: Path, steps: int, threads: int) -> dict[str, Any]:
    """Our side, in this process (run as a child with --peer ours)."""
    import torch

    from finalmlp.batch import Batch
    from finalmlp.layout import FieldLayout
    from finalmlp.models import build_model
    from finalmlp.schema import MLPConfig, MMoEConfig, TrainConfig
    from finalmlp.train.trainer import Trainer

    torch.set_num_threads(threads)
    data = dict(np.load(data_path))
    sizes = [int(s) for s in data["table_sizes"]]
    layout = FieldLayout(
        table_sizes=tuple(sizes),
        categorical_fields=tuple(f"c{i}" for i in range(len(sizes))),
        categorical_tables=tuple(range(len(sizes))),
        numeric_fields=tuple(f"n{i}" for i in range(data["numeric"].shape[1])),
    )
    config = MMoEConfig(
        embedding_dim=SETTINGS["embedding_dim"],
        num_experts=SETTINGS["num_experts"],
        expert=MLPConfig(hidden_units=SETTINGS["expert_hidden_units"]),
        gate_hidden_units=SETTINGS["gate_hidden_units"],
        tower=MLPConfig(hidden_units=SETTINGS["tower_hidden_units"]),
    )
    torch.manual_seed(SETTINGS["seed"])
    num_tasks = data["label"].shape[1]
    model = build_model(layout, config, num_tasks)
    train = TrainConfig(
        learning_rate=SETTINGS["learning_rate"],
        embedding_l2=SETTINGS["embedding_l2"],
        batch_size=SETTINGS["batch_size"],
        progress=False,
    )
    trainer = Trainer(model, train, tasks=[f"task{t}" for t in range(num_tasks)])
    model.train()
    order = np.random.default_rng(0).permutation(len(data["label"]))
    cat = torch.from_numpy(data["categorical"][order])
    num = torch.from_numpy(data["numeric"][order])
    lab = torch.from_numpy(data["label"][order].astype(np.float32))
    size = SETTINGS["batch_size"]
    count = len(order) // size

    def batch(i: int) -> Batch:
        rows = slice(i * size, (i + 1) * size)
        return Batch(cat[rows], num[rows], (), lab[rows])

    warmup = 20
    for i in range(warmup):
        trainer._train_step(batch(i), size)
    started = time.perf_counter()
    loss = 0.0
    for step in range(steps):
        loss = trainer._train_step(batch(warmup + step % (count - warmup)), size)
    seconds = time.perf_counter() - started
    return {
        "impl": "finalmlp",
        "steps": steps,
        "samples_per_s": steps * size / seconds,
        "seconds": seconds,
        "last_loss": loss,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_peer(impl: str, data: Path, settings: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    common = ["--data", str(data), "--steps", str(args.steps), "--threads", str(args.threads)]
    if impl == "finalmlp":
        command = [sys.executable, __file__, "--peer", "ours", *common]
    else:
        peer = Path(__file__).with_name("fuxictr_mmoe_peer.py")
        command = [str(FUXICTR_VENV / "bin" / "python"), str(peer), "--settings", str(settings),
                   *common]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{impl} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peer", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "results" / "mmoe_vs_fuxictr.json"
    )
    args = parser.parse_args()
    if args.peer == "ours":
        print(json.dumps(ours(args.data, args.steps, args.threads)))
        return
    if not CENSUS.is_file():
        raise SystemExit(f"{CENSUS} is absent: this benchmark needs ../shared/data")
    with tempfile.TemporaryDirectory(prefix="mmoe-bench-") as scratch:
        work = Path(scratch)
        data = encode(work)
        settings = work / "settings.json"
        settings.write_text(json.dumps(SETTINGS))
        runs = []
        for repeat in range(args.repeats):
            order = ("finalmlp", "fuxictr") if repeat % 2 == 0 else ("fuxictr", "finalmlp")
            for impl in order:
                result = run_peer(impl, data, settings, args)
                runs.append(result)
                print(f"{impl}: {result['samples_per_s']:,.0f} samples/s, "
                      f"peak RSS {result['peak_rss_mb']:,.0f} MB", flush=True)  # fmt: skip
    best = {
        impl: max(r["samples_per_s"] for r in runs if r["impl"] == impl)
        for impl in ("finalmlp", "fuxictr")
    }
    rss = {
        impl: statistics.fmean(r["peak_rss_mb"] for r in runs if r["impl"] == impl)
        for impl in ("finalmlp", "fuxictr")
    }
    summary = {
        "command": "benchmarks/bench_mmoe_vs_fuxictr.py " + " ".join(sys.argv[1:]),
        "commit": commit(),
        "settings": SETTINGS,
        "threads": args.threads,
        "runs": runs,
        "best_samples_per_s": best,
        "ratio_samples_per_s": best["finalmlp"] / best["fuxictr"],
        "mean_peak_rss_mb": rss,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"ours/FuxiCTR training samples/s: {summary['ratio_samples_per_s']:.2f}x "
          f"({best['finalmlp']:,.0f} vs {best['fuxictr']:,.0f}); peak RSS "
          f"{rss['finalmlp']:,.0f} vs {rss['fuxictr']:,.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
