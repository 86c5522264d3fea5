"""Batch-scoring throughput and single-row latency, PyTorch vs ONNX Runtime, on Frappe rows.

The model: FinalMLP with the paper's Frappe_x1 settings (configs/frappe_x1.yaml), trained one
epoch on the first 20k train rows (speed does not depend on how well it is trained), or the run
given with --run (copied; the copy gets the ONNX export). The input: the 28,860 test rows
repeated to --rows in a temporary CSV (and Parquet). Reported:

- end to end (``finalmlp predict``: read + encode + score + write), rows/s per backend, and
  where the time went (read / encode / model / write);
- model only: encoded rows -> probabilities, rows/s per backend (both run the served model,
  FinalMLP's single-field gates folded into lookups: finalmlp.serve.fold), and PyTorch on the
  module as trained (``torch_unfolded``) for comparison;
- single-row latency: one encoded row per call, --calls calls, p50/p99 in ms per backend.

Repeats alternate the backends (torch, onnx, torch, ...) so machine drift hits both alike;
the best repeat is reported, with every repeat in the JSON.

Usage:
    .venv/bin/python benchmarks/bench_scoring.py --rows 300000 --repeats 3 \
        --out docs/results/scoring_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml
from provenance import commit

from finalmlp.bundle import load_run
from finalmlp.config import parse_config
from finalmlp.predict import read_for_run
from finalmlp.serve.batch import MODEL_BATCH_ROWS, _rows, score_file
from finalmlp.serve.fold import serving_model
from finalmlp.serve.onnx import OnnxModel, export_onnx, torch_probabilities
from finalmlp.train.run import train_from_config

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "onnx")


def train_run(data: Path, folder: Path) -> Path:
    raw = yaml.safe_load((ROOT / "configs" / "frappe_x1.yaml").read_text())
    pl.read_csv(data / "train.csv", infer_schema=False, n_rows=20_000).write_csv(
        folder / "train.csv"
    )
    raw["data"].update(
        train=str(folder / "train.csv"),
        valid=str(data / "valid.csv"),
        test=str(data / "test.csv"),
        cache_dir=str(folder / "cache"),
    )
    raw["train"].update(max_epochs=1, progress=False)
    train_from_config(parse_config(raw), folder / "run")
    return folder / "run"


def make_input(test_csv: Path, rows: int, folder: Path) -> tuple[Path, Path]:
    test = pl.read_csv(test_csv, infer_schema=False)
    repeats = -(-rows // test.height)
    big = pl.concat([test] * repeats).head(rows)
    big.write_csv(folder / "rows.csv")
    big.write_parquet(folder / "rows.parquet")
    return folder / "rows.csv", folder / "rows.parquet"


def end_to_end(run_dir: Path, source: Path, folder: Path, repeats: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    suffix = source.suffix
    for _ in range(repeats):
        for backend in BACKENDS:
            out = folder / f"scores_{backend}{suffix}"
            report = score_file(run_dir, source, out, backend=backend)  # type: ignore[arg-type]
            entry = results.setdefault(backend, {"rows_per_s": [], "phases": []})
            entry["rows_per_s"].append(report.rows_per_s)
            entry["phases"].append({k: round(v, 3) for k, v in report.phases.items()})
            entry["rows"] = report.rows
    for entry in results.values():
        best = int(np.argmax(entry["rows_per_s"]))
        entry["best_rows_per_s"] = entry["rows_per_s"][best]
        entry["best_phases"] = entry["phases"][best]
    auto = score_file(run_dir, source, folder / f"scores_auto{suffix}")
    results["auto"] = {
        "backend": auto.backend,
        "choice": auto.choice,
        "rows_per_s": auto.rows_per_s,
    }
    return results


def model_only(run_dir: Path, test_csv: Path, rows: int, repeats: int) -> dict[str, Any]:
    run = load_run(run_dir)
    features = read_for_run(run, test_csv, require_label=False).features
    reps = -(-rows // features.num_rows)
    features = type(features)(
        np.tile(features.categorical, (reps, 1))[:rows],
        np.tile(features.numeric, (reps, 1))[:rows],
        tuple(np.tile(s, (reps, 1))[:rows] for s in features.sequences),
    )
    onnx = OnnxModel.from_run(run_dir)
    served = serving_model(run.model)
    predict = {
        "torch": lambda f: torch_probabilities(served, f, MODEL_BATCH_ROWS),
        "onnx": lambda f: onnx.predict(f, MODEL_BATCH_ROWS),
        # the trained module as it is, gates not folded (what predict_proba runs)
        "torch_unfolded": lambda f: torch_probabilities(run.model, f, MODEL_BATCH_ROWS),
    }
    speeds: dict[str, list[float]] = {name: [] for name in predict}
    for name in predict:
        predict[name](_rows(features, 0, MODEL_BATCH_ROWS))  # warm-up
    for _ in range(repeats):
        for name in predict:
            tick = time.perf_counter()
            predict[name](features)
            speeds[name].append(rows / (time.perf_counter() - tick))
    return {name: {"rows_per_s": v, "best_rows_per_s": max(v)} for name, v in speeds.items()}


def parity(run_dir: Path, test_csv: Path) -> dict[str, Any]:
    """Largest |score difference| on the test rows: ONNX Runtime and the folded PyTorch model
    against the trained module as the trainer scores it."""
    run = load_run(run_dir)
    features = read_for_run(run, test_csv, require_label=False).features
    reference = torch_probabilities(run.model, features)
    onnx = OnnxModel.from_run(run_dir).predict(features)
    folded = torch_probabilities(serving_model(run.model), features)
    return {
        "rows": features.num_rows,
        "onnx_max_abs_diff": float(np.abs(onnx - reference).max()),
        "torch_folded_max_abs_diff": float(np.abs(folded - reference).max()),
    }


def single_row_latency(run_dir: Path, test_csv: Path, calls: int) -> dict[str, Any]:
    run = load_run(run_dir)
    features = read_for_run(run, test_csv, require_label=False).features
    onnx = OnnxModel.from_run(run_dir)
    served = serving_model(run.model)
    predict = {
        "torch": lambda f: torch_probabilities(served, f),
        "onnx": lambda f: onnx.predict(f),
    }
    out: dict[str, Any] = {}
    for name in BACKENDS:
        for i in range(50):  # warm-up
            predict[name](_rows(features, i, i + 1))
        times = []
        for i in range(calls):
            row = _rows(features, i % features.num_rows, i % features.num_rows + 1)
            tick = time.perf_counter()
            predict[name](row)
            times.append((time.perf_counter() - tick) * 1e3)
        out[name] = {
            "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)),
            "mean_ms": float(np.mean(times)),
        }
    return out


def machine() -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "polars": pl.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "frappe_x1")
    parser.add_argument("--run", type=Path, help="run directory (default: train one, 1 epoch)")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args()
    info = {"machine": machine(), "commit": commit()}
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        folder = Path(tmp)
        if args.run is not None:
            run_dir = folder / "run"
            shutil.copytree(args.run, run_dir)
        else:
            run_dir = train_run(args.data, folder)
        export_onnx(run_dir)
        csv, parquet = make_input(args.data / "test.csv", args.rows, folder)
        results = {
            "config": {
                "model": "configs/frappe_x1.yaml",
                "rows": args.rows,
                "repeats": args.repeats,
                "chunk_rows": 100_000,
                "model_batch_rows": MODEL_BATCH_ROWS,
            },
            "end_to_end_csv": end_to_end(run_dir, csv, folder, args.repeats),
            "end_to_end_parquet": end_to_end(run_dir, parquet, folder, args.repeats),
            "model_only": model_only(run_dir, args.data / "test.csv", args.rows, args.repeats),
            "single_row_latency": single_row_latency(run_dir, args.data / "test.csv", args.calls),
            "parity": parity(run_dir, args.data / "test.csv"),
        }
    info["machine"]["load_average_at_end"] = os.getloadavg()
    report = {**info, **results}
    print(json.dumps(report, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
