"""finalmlp vs FuxiCTR 2.3.10 (the reference FinalMLP) in one run: preprocessing, training,
scoring and single-row latency, same data, hyperparameters and thread count; ratios ours/theirs.

Each side runs in its own process and virtual environment, alternating (ours, FuxiCTR,
FuxiCTR, ours, ...) so drift of the machine hits both alike:

- ``benchmarks/ours_peer.py`` in the project's .venv;
- ``benchmarks/fuxictr_peer.py`` in ``benchmarks/.fuxictr-venv`` (made on first use by
  ``benchmarks/fuxictr_env.sh``: FuxiCTR 2.3.10 from PyPI, polars < 2, the CPU torch 2.13.0).

Both read their settings from ``benchmarks/vs_fuxictr_common.py`` and report the same
figures (see there): preprocessing rows/s from raw CSV to model-ready arrays of all three
splits and its peak memory; training samples/s of the training loop (one epoch, or
``--steps`` batches, no validation) and its peak memory; inference rows/s over the test split
in batches of 4096; single-row latency. Every process gets ``--threads`` (torch, OpenMP, MKL,
Polars and FuxiCTR's Ray all limited to it).

The fraction of machine peak is (training FLOPs per sample x samples/s) / fp32 GEMM FLOP/s,
the GEMM rate measured here, in this run, with the same thread count (torch matrix products of
the model's own shapes at batch 4096 and a 2048 square; the best of all, before and after the
runs). FLOPs are counted analytically over the matrix products (2 x multiply-adds forward,
training = 3 x forward); embedding lookups, BatchNorm, activations and the optimizer are left
out. A gate without context fields costs a full MLP per row in FuxiCTR (its learned vector is
repeated over the batch) and one MLP per batch in ours: both counts are in the JSON.

Datasets: ``frappe_x1`` (``../shared/data/frappe_x1``, the paper's Frappe_x1 FinalMLP) and
``criteo-like`` (the project's generator: 13 numeric + 26 categorical fields, Zipf ids,
cardinalities up to 10^6; ``--rows`` rows split 80/10/10, written once as CSV under
``--cache-dir``; the FinalMLP Criteo settings: embedding 10, mlp1 [400, 400, 400], mlp2 [800],
gates [800], 10 heads, batch 4096).

Usage (an idle machine; about 10 minutes for Frappe, an hour for criteo-like, 2 repeats):
    .venv/bin/python benchmarks/bench_vs_fuxictr.py --dataset frappe_x1 --repeats 2
    .venv/bin/python benchmarks/bench_vs_fuxictr.py --dataset criteo-like --rows 2000000
    # writes docs/results/vs_fuxictr_<dataset>.json (or --out)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import commit
from vs_fuxictr_common import (
    DATASETS,
    FEATURES_FILE,
    BenchSpec,
    bench_spec,
    machine,
    peer_env,
)

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
FUXICTR_VENV = HERE / ".fuxictr-venv"
IMPLS = ("finalmlp", "fuxictr")
PEERS = {"finalmlp": HERE / "ours_peer.py", "fuxictr": HERE / "fuxictr_peer.py"}
CRITEO_LIKE = {"num_categorical": 26, "num_numeric": 13, "max_cardinality": 1_000_000, "seed": 2023}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


# ----------------------------------------------------------------------------- data
def criteo_like_data(rows: int, cache_dir: Path) -> Path:
    """train/valid/test.csv (80/10/10, in generation order) and features.json, made once."""
    from finalmlp.data.synthetic import generate_synthetic, synthetic_features
    from finalmlp.schema import SyntheticOptions

    folder = cache_dir / f"criteo_like_{rows}_seed{CRITEO_LIKE['seed']}"
    if (folder / FEATURES_FILE).is_file():
        return folder
    print(f"generating {rows:,} criteo-like rows into {folder} ...", flush=True)
    options = SyntheticOptions(num_rows=rows, **CRITEO_LIKE)
    frame = generate_synthetic(options)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=cache_dir))
    start = 0
    for name, fraction in zip(("train", "valid", "test"), SPLIT_FRACTIONS, strict=True):
        count = rows - start if name == "test" else round(rows * fraction)
        frame.slice(start, count).write_csv(tmp / f"{name}.csv")
        start += count
    fields = [
        {"name": f["name"], "kind": f["type"], "min_count": f.get("min_count", 1)}
        for f in synthetic_features(options)
    ]
    (tmp / FEATURES_FILE).write_text(json.dumps(fields, indent=1) + "\n")  # written last
    tmp.rename(folder)
    return folder


def data_folder(args: argparse.Namespace) -> Path:
    if args.data is not None:
        return Path(args.data).resolve()
    if args.dataset == "frappe_x1":
        return (ROOT.parent / "shared" / "data" / "frappe_x1").resolve()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    return criteo_like_data(args.rows, args.cache_dir)


def ensure_fuxictr_venv() -> Path:
    python = FUXICTR_VENV / "bin" / "python"
    if not (FUXICTR_VENV / ".installed").is_file():
        print("making benchmarks/.fuxictr-venv (FuxiCTR 2.3.10 from PyPI) ...", flush=True)
        subprocess.run(["bash", str(HERE / "fuxictr_env.sh")], check=True)
    return python


# ----------------------------------------------------------------------------- FLOPs
def _mlp_macs(width: int, units: tuple[int, ...], output_dim: int | None = None) -> int:
    macs = 0
    for out in (*units, *((output_dim,) if output_dim else ())):
        macs += width * out
        width = out
    return macs


def finalmlp_flops(spec: BenchSpec) -> dict[str, Any]:
    """Matrix-product FLOPs of FinalMLP per row: forward 2 x MACs, training 3 x forward.

    ``per_row_gates`` runs every gate's MLP for every row (FuxiCTR); ``batch_gates`` runs a
    gate without context fields once per batch (ours). With context on both gates they agree.
    A gate whose context is categorical only runs, in ours, once per distinct context value of
    the batch (data-dependent, not counted here): the fraction of peak of ours is then an
    effective one, the reference model's FLOPs over our time.
    """
    dim = spec.embedding_dim
    flat = dim * spec.num_fields
    d1, d2 = spec.mlp1[-1], spec.mlp2[-1]
    gates = {
        key: _mlp_macs(dim * max(1, len(context)), spec.fs_hidden, flat)
        for key, context in (("gate1", spec.fs1_context), ("gate2", spec.fs2_context))
    }
    macs = {
        "mlp1": _mlp_macs(flat, spec.mlp1),
        "mlp2": _mlp_macs(flat, spec.mlp2),
        **gates,
        "fusion": d1 + d2 + d1 * d2 // spec.num_heads,
    }
    per_row = sum(macs.values())
    shared = sum(
        gates[key]
        for key, context in (("gate1", spec.fs1_context), ("gate2", spec.fs2_context))
        if not context
    )
    per_batch = per_row - shared + shared / spec.batch_size

    def counts(row_macs: float) -> dict[str, float]:
        return {"forward_flops": 2 * row_macs, "train_flops": 6 * row_macs}

    return {
        "macs_per_row": macs,
        "per_row_gates": counts(per_row),
        "batch_gates": counts(per_batch),
        "executed": {"finalmlp": "batch_gates", "fuxictr": "per_row_gates"},
        "note": (
            "matrix products only; training = 3 x forward; ours runs a categorical-context "
            "gate once per distinct context value in the batch, so it executes fewer FLOPs "
            "than counted here (its fraction of peak is effective)"
        ),
    }


# ----------------------------------------------------------------------------- GEMM
def gemm_shapes(spec: BenchSpec) -> list[tuple[int, int, int]]:
    """(M, K, N) of the model's Linear layers at the training batch, and a 2048 square."""
    flat = spec.embedding_dim * spec.num_fields
    shapes = {(2048, 2048, 2048)}
    for units in (spec.mlp1, spec.mlp2):
        width = flat
        for out in units:
            shapes.add((spec.batch_size, width, out))
            width = out
    for context in (spec.fs1_context, spec.fs2_context):
        width = spec.embedding_dim * max(1, len(context))
        for out in (*spec.fs_hidden, flat):
            shapes.add((spec.batch_size, width, out))
            width = out
    return sorted(shapes)


def gemm_rates(spec: BenchSpec, threads: int, min_seconds: float = 0.3) -> dict[str, Any]:
    """Best fp32 FLOP/s of ``x @ W^T`` (as nn.Linear) per shape, with ``threads`` threads."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    rates = {}
    for m, k, n in gemm_shapes(spec):
        x = torch.randn(m, k, generator=generator)
        w = torch.randn(n, k, generator=generator)
        for _ in range(2):
            torch.nn.functional.linear(x, w)
        best, spent, reps = float("inf"), 0.0, 0
        while spent < min_seconds or reps < 3:
            tick = time.perf_counter()
            torch.nn.functional.linear(x, w)
            took = time.perf_counter() - tick
            best, spent, reps = min(best, took), spent + took, reps + 1
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n / best
    return {
        "flop_per_s": rates,
        "peak_flop_per_s": max(rates.values()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


# ----------------------------------------------------------------------------- runs
def run_peer(impl: str, python: Path, args: argparse.Namespace, data: Path, work: Path) -> dict:
    tag = f"{impl}_{len(list(work.glob('*.json')))}"
    out, log = work / f"{tag}.json", work / f"{tag}.log"
    command = [
        str(python), str(PEERS[impl]), "--dataset", args.dataset, "--data", str(data),
        "--threads", str(args.threads), "--steps", str(args.steps),
        "--latency-calls", str(args.latency_calls), "--workdir", str(work / tag), "--out", str(out),
    ]  # fmt: skip
    if impl == "finalmlp" and args.sparse_embeddings:
        command.append("--sparse-embeddings")
    print(f"[{time.strftime('%H:%M:%S')}] {impl}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with open(log, "w") as handle:
        env = peer_env(args.threads)
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0 or not out.is_file():
        tail = log.read_text()[-4000:]
        sys.exit(f"{impl} failed (exit {done.returncode}); log {log}:\n{tail}")
    result = json.loads(out.read_text())
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


FIGURES = (  # (key, path in a peer result, how to pick the best repeat, label)
    ("preprocess_rows_per_s", ("preprocess", "rows_per_s"), max, "preprocess rows/s"),
    ("preprocess_seconds", ("preprocess", "seconds"), min, "preprocess s"),
    ("preprocess_peak_mem_mb", ("preprocess", "peak_mem_mb"), max, "preprocess peak MB"),
    ("train_samples_per_s", ("train", "samples_per_s"), max, "train samples/s"),
    ("train_peak_mem_mb", ("train", "peak_mem_mb"), max, "train peak MB"),
    ("inference_rows_per_s", ("inference", "rows_per_s"), max, "inference rows/s (4096)"),
    (
        "inference_model_only_rows_per_s",
        ("inference", "rows_per_s_model_only"),
        max,
        "  model only, in memory",
    ),
    (
        "scoring_end_to_end_rows_per_s",
        ("inference", "end_to_end", "rows_per_s"),
        max,
        "scoring raw CSV->scores rows/s",
    ),
    ("latency_p50_ms", ("latency", "p50_ms"), min, "1-row latency p50 ms"),
    ("latency_p99_ms", ("latency", "p99_ms"), min, "1-row latency p99 ms"),
)


def _at(result: dict, path: tuple[str, ...]) -> float:
    value: Any = result
    for key in path:
        value = value[key]
    return float(value)


def summarize(runs: list[dict], flops: dict, gemm_peak: float) -> dict[str, Any]:
    best: dict[str, dict[str, float]] = {}
    for impl in IMPLS:
        mine = [r for r in runs if r["impl"] == impl]
        best[impl] = {key: pick(_at(r, path) for r in mine) for key, path, pick, _ in FIGURES}
        train_flops = flops[flops["executed"][impl]]["train_flops"]
        samples = best[impl]["train_samples_per_s"]
        best[impl]["train_gflop_per_s"] = train_flops * samples / 1e9
        best[impl]["fraction_of_peak"] = train_flops * samples / gemm_peak
        best[impl]["num_parameters"] = mine[0]["num_parameters"]
    ratios = {
        key: best["finalmlp"][key] / best["fuxictr"][key]
        for key in (*(f[0] for f in FIGURES), "fraction_of_peak")
        if best["fuxictr"][key]
    }
    return {"best": best, "ratios_ours_over_theirs": ratios}


def print_table(summary: dict[str, Any]) -> None:
    best, ratios = summary["best"], summary["ratios_ours_over_theirs"]
    rows = [(label, key) for key, _, _, label in FIGURES]
    rows += [("train GFLOP/s", "train_gflop_per_s"), ("fraction of GEMM peak", "fraction_of_peak")]
    print(f"\n{'figure':<26}{'finalmlp':>14}{'FuxiCTR':>14}{'ours/theirs':>13}")
    for label, key in rows:
        ours, theirs = best["finalmlp"][key], best["fuxictr"][key]
        ratio = ratios.get(key, ours / theirs if theirs else float("nan"))
        fmt = "{:>14.4f}" if key == "fraction_of_peak" else "{:>14,.1f}"
        print(f"{label:<26}" + fmt.format(ours) + fmt.format(theirs) + f"{ratio:>13.2f}")
    params = {impl: best[impl]["num_parameters"] for impl in IMPLS}
    gap = params["finalmlp"] - params["fuxictr"]
    print(f"parameters: {params} ({'same' if gap == 0 else f'ours {gap:+,}'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="frappe_x1")
    parser.add_argument("--rows", type=int, default=2_000_000, help="criteo-like rows, all splits")
    parser.add_argument(
        "--data", type=Path, help="folder of train/valid/test.csv (default: the dataset's)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "finalmlp" / "bench"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=0, help="training steps; 0: one epoch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument(
        "--sparse-embeddings",
        action="store_true",
        help="our side trains with train.sparse_embeddings (SparseAdam for the tables)",
    )
    parser.add_argument(
        "--keep", type=Path, help="keep each run's log, JSON and FuxiCTR files here"
    )
    parser.add_argument("--out", type=Path, help="default: docs/results/vs_fuxictr_<dataset>.json")
    args = parser.parse_args()
    out = (
        args.out or ROOT / "docs" / "results" / f"vs_fuxictr_{args.dataset.replace('-', '_')}.json"
    )
    python = {"finalmlp": Path(sys.executable), "fuxictr": ensure_fuxictr_venv()}
    data = data_folder(args)
    spec = bench_spec(args.dataset, data)
    info = {"machine": machine(), "commit": commit()}
    flops = finalmlp_flops(spec)
    gemm_before = gemm_rates(spec, args.threads)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-vs-fuxictr-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for repeat in range(args.repeats):
            order = IMPLS if repeat % 2 == 0 else IMPLS[::-1]
            runs.extend(run_peer(impl, python[impl], args, data, work) for impl in order)
    gemm_after = gemm_rates(spec, args.threads)
    peak = max(gemm_before["peak_flop_per_s"], gemm_after["peak_flop_per_s"])
    summary = summarize(runs, flops, peak)
    info["machine"]["load_average_at_end"] = os.getloadavg()
    report = {
        "benchmark": "bench_vs_fuxictr",
        **info,
        "config": {
            "dataset": args.dataset,
            "data": str(data),
            "rows": sum(r["preprocess"]["rows"] for r in runs[:1]),
            "threads": args.threads,
            "steps": args.steps,
            "repeats": args.repeats,
            "latency_calls": args.latency_calls,
            "sparse_embeddings_ours": args.sparse_embeddings,
            "spec": spec.to_dict(),
            "polars_ours": pl.__version__,
            "command": " ".join(sys.argv),
        },
        "gemm": {"before": gemm_before, "after": gemm_after, "peak_flop_per_s": peak},
        "flops": flops,
        **summary,
        "runs": runs,
    }
    print_table(summary)
    print(f"fp32 GEMM peak {peak / 1e9:,.1f} GFLOP/s with {args.threads} thread(s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
