"""DIN training speed, preprocessing and peak memory: finalmlp vs FuxiCTR 2.3.10's DIN, in one
run, on the same rows and settings.

Rows: MovieLens ml-latest-small through the ``movielens_latest`` recipe (``../shared/data``):
label = rating >= 4; features the user, the movie, its genre combination, its genres as a
mean-pooled sequence (max 10), and the user's earlier rated movies and their genre
combinations as histories (the last 50 before the row), each pooled by DIN attention to the
candidate movie / genre combination; split by time (80/10/10).

The histories are built once by our builder (``finalmlp.features.history``) and written, with
the split rows, as CSVs for FuxiCTR: history columns of ``^``-joined movie ids and genre
strings, as FuxiCTR's sequence features read them. So both sides see the same rows, the same
histories and the same labels. What each side's *preprocessing* covers:

- ours: ``prepare_data`` without cache from the raw ``ratings.csv``: read, join ``movies.csv``,
  time split, build the histories from the event log, fit the vocabularies, encode all three
  splits (histories stored as events + per-row offsets, ``HistoryColumn``);
- FuxiCTR: ``FeatureProcessor`` + ``build_dataset`` from the three pre-joined CSVs: read,
  fit the vocabularies, encode the ``^``-joined strings into padded (N, 50) arrays, write
  Parquet (Ray Data). Building the history strings is *not* in its time (FuxiCTR has no
  builder; users make them before).

Settings (preset ``fuxictr_din``: FuxiCTR's DIN class defaults, both sides): embedding 10,
attention unit [64] with Dice over [q, k, q-k, q*k], no softmax, padding masked; MLP
[512, 128, 64] ReLU, no BatchNorm or dropout; Adam 1e-3, no regularisation, clipping at 10;
batch 1024. Each (target, history) pair has its own attention unit on both sides.

Each side runs in its own process, alternating ours, FuxiCTR, FuxiCTR, ours... with the same
thread count (torch, OpenMP, MKL, Polars, Ray). Training is timed over ``--steps`` steps
(0: one epoch) of each side's own loop: ours the Trainer's optimizer step over our
BatchLoader (batches gathered from the compact histories), FuxiCTR's ``train_step`` over its
Ray Data Parquet loader, and also over in-memory tensors (``train_in_memory``, no loader: a
lower bound for FuxiCTR's cost per step). Peak memory per stage: the process's resident
high-water mark (reset per stage) or the PSS sum over its process tree (Ray's workers and
object store), whichever is larger (``vs_fuxictr_common.PeakMemory``).

Usage (a quiet machine, a few minutes):
    .venv/bin/python benchmarks/bench_din_vs_fuxictr.py --repeats 3 --threads 2
    # writes docs/results/din_vs_fuxictr.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import commit
from vs_fuxictr_common import PeakMemory, count_csv_rows, machine, peer_env, rate, write_result

ROOT = Path(__file__).resolve().parents[1]
RATINGS = ROOT / ".." / "shared" / "data" / "movielens_latest_small" / "ratings.csv"
FUXICTR_VENV = Path(os.environ.get("FUXICTR_VENV", ROOT / "benchmarks" / ".fuxictr-venv"))
SPLITS = ("train", "valid", "test")
PRESETS: dict[str, dict[str, Any]] = {
    "fuxictr_din": {  # FuxiCTR model_zoo/DIN class defaults (its DIN_default uses batch 10000)
        "embedding_dim": 10,
        "dnn_hidden_units": [512, 128, 64],
        "dnn_activation": "ReLU",
        "attention_hidden_units": [64],
        "attention_activation": "Dice",
        "softmax": False,
        "batch_size": 1024,
        "learning_rate": 1e-3,
        "embedding_l2": 0.0,
        "seed": 2019,
    },
}
# The recipe's fields as FuxiCTR columns of the driver's CSVs.
FUXICTR_FIELDS: dict[str, Any] = {
    "categorical": ["userId", "movieId", "genres"],
    "sequence_columns": [
        {"name": "genre_list", "splitter": "|", "max_len": 10},
        {
            "name": "hist_movies",
            "splitter": "^",
            "max_len": 50,
            "share_embedding": "movieId",
            "attention": True,
        },
        {
            "name": "hist_genres",
            "splitter": "^",
            "max_len": 50,
            "share_embedding": "genres",
            "attention": True,
        },
    ],
    "targets": ["movieId", "genres"],
    "sequences": ["hist_movies", "hist_genres"],
}


def our_config(settings: dict[str, Any], threads: int) -> Any:
    from finalmlp.config import parse_config

    activation = settings["attention_activation"].lower()
    return parse_config(
        {
            "data": {"recipe": "movielens_latest", "train": str(RATINGS.resolve())},
            "model": {
                "name": "din",
                "embedding_dim": settings["embedding_dim"],
                "mlp": {
                    "hidden_units": settings["dnn_hidden_units"],
                    "batch_norm": False,
                    "dropout": 0.0,
                },
                "activation": settings["dnn_activation"].lower(),
            },
            "train": {
                "batch_size": settings["batch_size"],
                "learning_rate": settings["learning_rate"],
                "embedding_l2": settings["embedding_l2"],
                "max_grad_norm": 10.0,
                "seed": settings["seed"],
                "num_threads": threads,
                "device": "cpu",
                "progress": False,
            },
        },
        origin="bench_din_vs_fuxictr",
    ), {
        "hidden_units": settings["attention_hidden_units"],
        "activation": activation,
        "softmax": settings["softmax"],
    }


# ----------------------------------------------------------------------------- FuxiCTR's CSVs
def joined(values: pl.Series, ends: np.ndarray, lengths: np.ndarray) -> pl.Series:
    """Each row's history (``values[ends - lengths : ends]``) joined with ``^``."""
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    starts = np.repeat(ends - lengths, lengths)
    index = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths) + starts
    items = values.cast(pl.Utf8).fill_null("").gather(index).to_arrow()
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), items)
    return pl.Series(pl.from_arrow(lists)).list.join("^")


def write_fuxictr_csvs(folder: Path) -> dict[str, int]:
    """The recipe's split rows and our builder's histories, as FuxiCTR's input CSVs."""
    from finalmlp.data.frames import frame_histories, load_frames

    config, _ = our_config(PRESETS["fuxictr_din"], 1)
    frames = load_frames(config.data)
    histories = frame_histories(frames, config.data)
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        frame, built = frames[split], histories[split]
        out = pl.DataFrame(
            {
                "userId": frame["userId"],
                "movieId": frame["movieId"],
                "genres": frame["genres"].fill_null(""),
                "genre_list": frame["genres"].fill_null(""),
                "hist_movies": joined(built.events["movieId"], built.ends, built.lengths),
                "hist_genres": joined(built.events["genres"], built.ends, built.lengths),
                "label": frame["rating"].cast(pl.Int8),  # the recipe's label map: rating >= 4
            }
        )
        out.write_csv(folder / f"{split}.csv")
    return {split: frames[split].height for split in SPLITS}


# ----------------------------------------------------------------------------- our side
def history_bytes(splits: dict[str, Any]) -> dict[str, Any]:
    """Bytes of the encoded histories held in memory: events + offsets, each array once."""
    from finalmlp.features.history_column import HistoryColumn

    seen: dict[int, int] = {}
    rows = 0
    for split in splits.values():
        rows += split.features.num_rows
        for column in split.features.sequences:
            if isinstance(column, HistoryColumn):
                for array in (column.values, column.ends, column.lengths):
                    seen[id(array)] = array.nbytes
    total = sum(seen.values())
    return {"rows": rows, "in_memory": total, "per_row_in_memory": round(total / rows, 1)}


def ours(settings: dict[str, Any], steps: int, threads: int) -> dict[str, Any]:
    """Our side, in this process (run as a child with --peer ours)."""
    import torch

    import finalmlp
    from finalmlp.data.dataset import prepare_data
    from finalmlp.data.split import BatchLoader
    from finalmlp.models import build_model
    from finalmlp.schema import AttentionOptions
    from finalmlp.train.run import seed_everything
    from finalmlp.train.trainer import Trainer

    torch.set_num_threads(threads)
    config, attention = our_config(settings, threads)
    features = [
        f.model_copy(update={"attention": AttentionOptions(**attention)})
        if getattr(f, "pooling", None) == "attention"
        else f
        for f in config.data.features
    ]
    data = config.data.model_copy(update={"features": features})
    rows = count_csv_rows(RATINGS)
    with PeakMemory() as memory:
        tick = time.perf_counter()
        prepared = prepare_data(data, cache=False)
        seconds = time.perf_counter() - tick
    prep = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rate(rows, seconds)}
    prep.update(memory.report())
    seed_everything(settings["seed"])
    model = build_model(prepared.processor.layout, config.model)
    trainer = Trainer(model, config.train)
    loader = BatchLoader(
        prepared.splits["train"], settings["batch_size"], shuffle=True, seed=settings["seed"]
    )
    wanted = len(loader) if steps == 0 else min(steps, len(loader))
    with PeakMemory() as memory:
        model.train()
        samples, loss, done = 0, float("nan"), 0
        started = time.perf_counter()
        for step, batch in enumerate(loader.batches(), start=1):
            loss = trainer._train_step(batch, batch.size, step, 1)
            samples, done = samples + batch.size, step
            if step == wanted:
                break
        took = time.perf_counter() - started
    train = {
        "steps": done,
        "samples": samples,
        "seconds": round(took, 3),
        "samples_per_s": rate(samples, took),
        "last_loss": loss,
    }
    train.update(memory.report())
    return {
        "impl": "finalmlp",
        "versions": {
            "finalmlp": finalmlp.__version__,
            "torch": torch.__version__,
            "polars": pl.__version__,
        },
        "threads": threads,
        "torch_threads": torch.get_num_threads(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "preprocess": prep,
        "train": train,
        "history_bytes": history_bytes(prepared.splits),
    }


# ----------------------------------------------------------------------------- driver
def run_peer(impl: str, args: argparse.Namespace, data: Path, settings: Path, work: Path) -> dict:
    tag = f"{impl}_{len(list(work.glob('*.json')))}"
    out, log = work / f"{tag}.json", work / f"{tag}.log"
    common = [
        "--settings",
        str(settings),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--out",
        str(out),
    ]
    if impl == "finalmlp":
        command = [sys.executable, __file__, "--peer", "ours", *common]
    else:
        peer = Path(__file__).with_name("fuxictr_din_peer.py")
        command = [
            str(FUXICTR_VENV / "bin" / "python"),
            str(peer),
            "--data",
            str(data),
            "--workdir",
            str(work / tag),
            *common,
        ]
    print(f"[{time.strftime('%H:%M:%S')}] {impl}: {' '.join(command)}", flush=True)
    with open(log, "w") as handle:
        done = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, env=peer_env(args.threads), cwd=ROOT
        )
    if done.returncode != 0 or not out.is_file():
        sys.exit(f"{impl} failed (exit {done.returncode}); log {log}:\n{log.read_text()[-4000:]}")
    result = json.loads(out.read_text())
    train, prep = result["train"], result["preprocess"]
    print(
        f"  preprocess {prep['seconds']:.2f} s, peak {prep['peak_mem_mb']:,.0f} MB; train "
        f"{train['samples_per_s']:,.0f} samples/s, peak {train['peak_mem_mb']:,.0f} MB"
        + (
            f"; in memory {result['train_in_memory']['samples_per_s']:,.0f} samples/s"
            if "train_in_memory" in result
            else ""
        ),
        flush=True,
    )
    return result


def pair_ratios(runs: list[dict], stage: str) -> list[float]:
    """Ours over FuxiCTR's ``stage`` samples/s, each run against its neighbour in time."""
    out = []
    for first, second in zip(runs[::2], runs[1::2], strict=True):
        mine, theirs = (first, second) if first["impl"] == "finalmlp" else (second, first)
        out.append(mine["train"]["samples_per_s"] / theirs[stage]["samples_per_s"])
    return out


def summarize(runs: list[dict]) -> dict[str, Any]:
    def pick(impl: str, *path: str) -> list[float]:
        values = []
        for run in (r for r in runs if r["impl"] == impl):
            value: Any = run
            for key in path:
                value = value[key]
            values.append(float(value))
        return values

    loader, memory = pair_ratios(runs, "train"), pair_ratios(runs, "train_in_memory")
    summary: dict[str, Any] = {
        "pair_ratios_train_samples_per_s": [round(r, 2) for r in loader],
        "median_pair_ratio": round(statistics.median(loader), 2),
        "pair_ratios_vs_fuxictr_in_memory": [round(r, 2) for r in memory],
        "median_pair_ratio_vs_in_memory": round(statistics.median(memory), 2),
    }
    for impl in ("finalmlp", "fuxictr"):
        summary[impl] = {
            "train_samples_per_s": pick(impl, "train", "samples_per_s"),
            "preprocess_seconds": pick(impl, "preprocess", "seconds"),
            "preprocess_peak_mem_mb": pick(impl, "preprocess", "peak_mem_mb"),
            "train_peak_mem_mb": pick(impl, "train", "peak_mem_mb"),
            "history_bytes_per_row": runs[0 if runs[0]["impl"] == impl else 1]["history_bytes"][
                "per_row_in_memory"
            ],
            "num_parameters": next(r["num_parameters"] for r in runs if r["impl"] == impl),
        }
    summary["fuxictr"]["train_in_memory_samples_per_s"] = pick(
        "fuxictr", "train_in_memory", "samples_per_s"
    )
    summary["fuxictr"]["train_in_memory_peak_mem_mb"] = pick(
        "fuxictr", "train_in_memory", "peak_mem_mb"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0, help="training steps; 0: one epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="fuxictr_din")
    parser.add_argument("--peer", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--settings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=Path, help="keep the CSVs, logs and JSONs here")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "results" / "din_vs_fuxictr.json"
    )
    args = parser.parse_args()
    if args.peer == "ours":
        settings = json.loads(args.settings.read_text())
        write_result(ours(settings, args.steps, args.threads), args.out)
        return
    if not RATINGS.is_file():
        raise SystemExit(f"{RATINGS} is absent: this benchmark needs ../shared/data")
    if not (FUXICTR_VENV / "bin" / "python").is_file():
        raise SystemExit(f"no FuxiCTR venv at {FUXICTR_VENV}: run bash benchmarks/fuxictr_env.sh")
    with tempfile.TemporaryDirectory(prefix="din-vs-fuxictr-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        tick = time.perf_counter()
        rows = write_fuxictr_csvs(work / "csv")
        print(f"wrote FuxiCTR's CSVs ({rows}) in {time.perf_counter() - tick:.1f} s (untimed)")
        settings = work / "settings.json"
        settings.write_text(json.dumps({**PRESETS[args.preset], **FUXICTR_FIELDS}))
        runs: list[dict[str, Any]] = []
        for repeat in range(args.repeats):
            order = ("finalmlp", "fuxictr") if repeat % 2 == 0 else ("fuxictr", "finalmlp")
            runs.extend(run_peer(impl, args, work / "csv", settings, work) for impl in order)
    report = {
        "benchmark": "bench_din_vs_fuxictr",
        "command": "benchmarks/bench_din_vs_fuxictr.py " + " ".join(sys.argv[1:]),
        "commit": commit(),
        "machine": {**machine(), "load_average_at_end": os.getloadavg()},
        "preset": args.preset,
        "settings": PRESETS[args.preset],
        "rows": rows,
        "threads": args.threads,
        "steps": args.steps,
        **summarize(runs),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k not in ("runs", "machine")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
