"""Build and encode behaviour histories for a large synthetic event log: time and peak RSS.

The event log (default 10M events of 1M users; items Zipf-distributed over 200k ids, 1,000
categories, times uniform, labels 0/1) is generated first and written to Parquet; that is not
timed. A fresh child process then

1. reads the Parquet (``read_s``, timed on its own);
2. builds the histories (``build_s``): ``build_histories`` with ``max_len`` 50 over the item
   and category columns, every event a behaviour (the heaviest case);
3. encodes them (``encode_s``): ``FeatureProcessor.fit_transform`` of the user, item and
   category fields and the two history fields (histories sharing the candidate's tables);

and reports its peak resident set (``ru_maxrss``: the log, the histories and the encoded
arrays, all held at once) and the bytes of the encoded histories (events + per-row offsets).

Usage (a quiet machine; about a minute):
    .venv/bin/python benchmarks/bench_history_build.py            # 10M events, 1M users
    .venv/bin/python benchmarks/bench_history_build.py --events 1000000 --users 100000
    # writes docs/results/history_build.json (or --out)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import commit

ROOT = Path(__file__).resolve().parents[1]
NUM_ITEMS, NUM_CATEGORIES, ZIPF = 200_000, 1_000, 1.2


def generate(events: int, users: int, seed: int, path: Path) -> None:
    """The synthetic event log, written to ``path`` (Parquet)."""
    rng = np.random.default_rng(seed)
    item = (rng.zipf(ZIPF, events) - 1) % NUM_ITEMS
    frame = pl.DataFrame(
        {
            "user": pl.Series(rng.integers(0, users, events)).cast(pl.Utf8),
            "time": rng.integers(0, 10**9, events),
            "item": pl.Series(item).cast(pl.Utf8),
            "category": pl.Series(item % NUM_CATEGORIES).cast(pl.Utf8),
            "label": rng.integers(0, 2, events).astype(np.int8),
        }
    )
    frame.write_parquet(path)


def child(path: Path, max_len: int) -> dict[str, Any]:
    """Read, build and encode in this (fresh) process; its timings and peak RSS."""
    from finalmlp.data.synthetic_history import event_log_config
    from finalmlp.features.history import build_histories
    from finalmlp.features.history_column import HistoryColumn
    from finalmlp.features.processor import FeatureProcessor
    from finalmlp.schema import DataConfig

    config = DataConfig.model_validate(
        {
            "format": "parquet",
            "train": str(path),
            "label": "label",
            "features": event_log_config()["features"],
            "history": {"user": "user", "time": "time", "max_len": max_len},
        }
    )
    assert config.history is not None
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tick = time.perf_counter()
    frame = pl.read_parquet(path)
    read_s = time.perf_counter() - tick
    tick = time.perf_counter()
    built = build_histories({"train": frame}, config.history, ["item", "category"])["train"]
    build_s = time.perf_counter() - tick
    tick = time.perf_counter()
    encoded = FeatureProcessor(config.features).fit_transform(frame, built)
    encode_s = time.perf_counter() - tick
    arrays: dict[int, int] = {}
    for column in encoded.sequences:
        assert isinstance(column, HistoryColumn)
        for array in (column.values, column.ends, column.lengths):
            arrays[id(array)] = array.nbytes
    history_bytes = sum(arrays.values())
    return {
        "events": frame.height,
        "users": frame["user"].n_unique(),
        "max_len": max_len,
        "mean_history_length": round(float(built.lengths.mean()), 2),
        "read_s": round(read_s, 2),
        "build_s": round(build_s, 2),
        "encode_s": round(encode_s, 2),
        "build_and_encode_s": round(build_s + encode_s, 2),
        "history_bytes": history_bytes,
        "history_bytes_per_row": round(history_bytes / frame.height, 1),
        "padded_bytes_per_row_int32": 2 * 4 * max_len,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_after_imports_mb": round(rss_start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "results" / "history_build.json"
    )
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.max_len)))
        return
    with tempfile.TemporaryDirectory(prefix="history-build-") as scratch:
        path = Path(scratch) / "events.parquet"
        tick = time.perf_counter()
        generate(args.events, args.users, args.seed, path)
        generate_s = time.perf_counter() - tick
        print(f"generated {args.events:,} events in {generate_s:.1f} s (not timed)", flush=True)
        command = [sys.executable, __file__, "--child", str(path), "--max-len", str(args.max_len)]
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        if done.returncode != 0:
            raise SystemExit(f"the build failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        "benchmark": "bench_history_build",
        "command": "benchmarks/bench_history_build.py " + " ".join(sys.argv[1:]),
        "commit": commit(),
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "generate_s_untimed": round(generate_s, 1),
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
