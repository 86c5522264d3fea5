"""MMoE training speed and peak memory: finalmlp vs FuxiCTR 2.3.10's MMoE, in one run.

Both sides train MMoE on the same encoded rows of the census_income recipe (UCI
Census-Income (KDD), two tasks: income > 50K and never married; ``../shared/data``) with the
same settings, one of two presets: ``fuxictr_default`` is FuxiCTR's own MMoE settings
(``model_zoo/multitask/MMoE/config/model_config.yaml``, ``MMoE_default``): embedding 64,
8 experts [512, 256, 128], gates [128, 64], towers [128, 64], ReLU, no BatchNorm, no dropout,
batch 128, Adam 1e-3, embedding L2 1e-6, clipping at 10; ``census_table`` is the MMoE of
docs/multitask.md (configs/census_income_mmoe.yaml): embedding 16, 8 experts [256, 128] with
BatchNorm, linear gates, towers [64], batch 1024, embedding L2 1e-5. The dense-layer FLOPs
per training sample and this machine's fp32 GEMM peak are printed beside the rates, so each
side's fraction of the peak (an upper bound on any speed-up) is in the result.

Each side runs in its own process (ours in the project's .venv, FuxiCTR's in its venv from
``benchmarks/fuxictr_env.sh``), alternating ours, FuxiCTR, FuxiCTR, ours... so drift of the
machine hits both alike, with the same thread count. Each times ``--steps`` training steps
after 20 warm-up steps over in-memory batches (shuffled once), and reports samples/s and the
process's peak RSS (data, model, optimizer state). FuxiCTR's Ray data loader is not in its
timed loop, ours does its own batch gathers: a lower bound for FuxiCTR's cost per step.

Usage (an idle machine, a few minutes):
    .venv/bin/python benchmarks/bench_mmoe_vs_fuxictr.py --repeats 3 --steps 300
    .venv/bin/python benchmarks/bench_mmoe_vs_fuxictr.py --repeats 3 --steps 100 \
        --preset census_table      # the model and batch of docs/multitask.md's table
    # write docs/results/mmoe_vs_fuxictr_PRESET.json
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
PRESETS: dict[str, dict[str, Any]] = {
    "fuxictr_default": {  # FuxiCTR's MMoE_default
        "embedding_dim": 64,
        "num_experts": 8,
        "expert_hidden_units": [512, 256, 128],
        "expert_batch_norm": False,
        "gate_hidden_units": [128, 64],
        "tower_hidden_units": [128, 64],
        "batch_size": 128,
        "learning_rate": 1e-3,
        "embedding_l2": 1e-6,
        "seed": 2023,
    },
    "census_table": {  # configs/census_income_mmoe.yaml, the model of docs/multitask.md
        "embedding_dim": 16,
        "num_experts": 8,
        "expert_hidden_units": [256, 128],
        "expert_batch_norm": True,
        "gate_hidden_units": [],
        "tower_hidden_units": [64],
        "batch_size": 1024,
        "learning_rate": 1e-3,
        "embedding_l2": 1e-5,
        "seed": 2023,
    },
}


def train_flops_per_sample(settings: dict[str, Any], num_fields: int, num_tasks: int) -> float:
    """Multiply-adds of the dense layers x 2 (FLOPs) x 3 (forward, two backward products)."""

    def mlp(width: int, units: list[int], output: int | None = None) -> int:
        macs = 0
        for out in [*units, *([output] if output else [])]:
            macs, width = macs + width * out, out
        return macs

    flat = settings["embedding_dim"] * num_fields
    experts = settings["num_experts"] * mlp(flat, settings["expert_hidden_units"])
    gates = num_tasks * mlp(flat, settings["gate_hidden_units"], settings["num_experts"])
    towers = num_tasks * mlp(settings["expert_hidden_units"][-1], settings["tower_hidden_units"], 1)
    return 6.0 * (experts + gates + towers)


def gemm_peak(threads: int, seconds: float = 2.0) -> float:
    """This machine's fp32 GEMM rate (FLOP/s) at 1024 x 2048 x 2048, the best of a few tries."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 2048), torch.randn(2048, 2048)
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        tick = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 1024 * 2048 * 2048 / (time.perf_counter() - tick))
    return best


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


def ours(data_path: Path, steps: int, threads: int, settings: dict[str, Any]) -> dict[str, Any]:
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
        embedding_dim=settings["embedding_dim"],
        num_experts=settings["num_experts"],
        expert=MLPConfig(
            hidden_units=settings["expert_hidden_units"],
            batch_norm=settings["expert_batch_norm"],
        ),
        gate_hidden_units=settings["gate_hidden_units"],
        tower=MLPConfig(hidden_units=settings["tower_hidden_units"]),
    )
    torch.manual_seed(settings["seed"])
    num_tasks = data["label"].shape[1]
    model = build_model(layout, config, num_tasks)
    train = TrainConfig(
        learning_rate=settings["learning_rate"],
        embedding_l2=settings["embedding_l2"],
        batch_size=settings["batch_size"],
        precision=settings.get("precision", "fp32"),
        progress=False,
    )
    trainer = Trainer(model, train, tasks=[f"task{t}" for t in range(num_tasks)])
    model.train()
    order = np.random.default_rng(0).permutation(len(data["label"]))
    cat = torch.from_numpy(data["categorical"][order])
    num = torch.from_numpy(data["numeric"][order])
    lab = torch.from_numpy(data["label"][order].astype(np.float32))
    size = settings["batch_size"]
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
        command = [sys.executable, __file__, "--peer", "ours", "--settings", str(settings), *common]
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
    parser.add_argument("--settings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fuxictr_default")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="our side's train.precision (bf16: autocast matrix products; FuxiCTR stays fp32)",
    )
    parser.add_argument(
        "--out", type=Path, help="default: docs/results/mmoe_vs_fuxictr_PRESET.json"
    )
    args = parser.parse_args()
    if args.peer == "ours":
        settings = json.loads(args.settings.read_text())
        print(json.dumps(ours(args.data, args.steps, args.threads, settings)))
        return
    if not CENSUS.is_file():
        raise SystemExit(f"{CENSUS} is absent: this benchmark needs ../shared/data")
    with tempfile.TemporaryDirectory(prefix="mmoe-bench-") as scratch:
        work = Path(scratch)
        data = encode(work)
        settings = work / "settings.json"
        settings.write_text(json.dumps({**PRESETS[args.preset], "precision": args.precision}))
        arrays = np.load(data)
        num_fields = len(arrays["table_sizes"]) + arrays["numeric"].shape[1]
        flops = train_flops_per_sample(PRESETS[args.preset], num_fields, arrays["label"].shape[1])
        peak = gemm_peak(args.threads)
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
    pairs = [  # each run against the other side's run next to it in time
        runs[i]["samples_per_s"] / runs[i + 1]["samples_per_s"]
        if runs[i]["impl"] == "finalmlp"
        else runs[i + 1]["samples_per_s"] / runs[i]["samples_per_s"]
        for i in range(0, len(runs), 2)
    ]
    summary = {
        "command": "benchmarks/bench_mmoe_vs_fuxictr.py " + " ".join(sys.argv[1:]),
        "commit": commit(),
        "preset": args.preset,
        "our_precision": args.precision,
        "settings": PRESETS[args.preset],
        "train_gflop_per_sample": flops / 1e9,
        "gemm_peak_gflops": peak / 1e9,
        "fraction_of_gemm_peak": {impl: best[impl] * flops / peak for impl in best},
        "pair_ratios": pairs,
        "median_pair_ratio": statistics.median(pairs),
        "threads": args.threads,
        "runs": runs,
        "best_samples_per_s": best,
        "ratio_samples_per_s": best["finalmlp"] / best["fuxictr"],
        "mean_peak_rss_mb": rss,
    }
    if args.out is None:
        suffix = "" if args.precision == "fp32" else f"_{args.precision}"
        args.out = ROOT / "docs" / "results" / f"mmoe_vs_fuxictr_{args.preset}{suffix}.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"GEMM peak {peak / 1e9:.0f} GFLOP/s; {flops / 1e6:.1f} MFLOP per training sample; "
          f"fraction of peak {summary['fraction_of_gemm_peak']}; pair ratios "
          f"{[round(r, 2) for r in pairs]}")  # fmt: skip
    print(f"ours/FuxiCTR training samples/s: {summary['ratio_samples_per_s']:.2f}x "
          f"({best['finalmlp']:,.0f} vs {best['fuxictr']:,.0f}); peak RSS "
          f"{rss['finalmlp']:,.0f} vs {rss['fuxictr']:,.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
