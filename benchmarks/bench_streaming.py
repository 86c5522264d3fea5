"""Out-of-core training at scale: data.streaming on tens of millions of synthetic rows.

Measures, in one run:

1. preprocessing: ``prepare_data`` with ``data.streaming`` over the training parts (a folder
   of Parquet files, 1M rows each): fit file by file, encode each part into a shard; rows/s
   and peak RSS;
2. training: one epoch (or ``--steps`` batches) of the Trainer's step over the
   StreamingLoader of all shards; samples/s and peak RSS;
3. the in-memory reference: the first ``--memory-parts`` shards read whole into arrays and
   trained on with the in-memory BatchLoader, and the same shards through the StreamingLoader,
   alternating, same model and step: the streaming/in-memory ratio of samples/s.

Data: criteo-like rows from the project's generator (13 numeric + 26 categorical fields, Zipf
ids, cardinalities up to 10^6), written once under ``--cache-dir`` as ``--parts`` Parquet files
of 1M rows (part i drawn with seed 1000 + i, so each part has its own hidden teacher: the data
are for speed and memory, not accuracy) plus valid/test files of 500k rows.

The model is a FinalMLP smaller than the paper's Criteo one (``MODEL`` below: the epoch over
50M rows has to fit in a session on 2 cores); embeddings use train.sparse_embeddings (tables
of millions of rows).

Usage (an idle machine; generation ~12 s per part, once):
    .venv/bin/python benchmarks/bench_streaming.py --parts 50
    # -> docs/results/streaming_50m.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ours_peer import timed_steps
from provenance import commit
from vs_fuxictr_common import PeakMemory, machine, rate

from finalmlp.config import parse_config
from finalmlp.data.dataset import EncodedSplit, prepare_data
from finalmlp.data.shards import StreamedSplit, StreamingLoader, _Rows
from finalmlp.data.split import BatchLoader
from finalmlp.data.synthetic import generate_synthetic, synthetic_features
from finalmlp.models import build_model
from finalmlp.schema import ExperimentConfig, SyntheticOptions
from finalmlp.train.run import seed_everything
from finalmlp.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
PART_ROWS = 1_000_000
EVAL_ROWS = 500_000
GENERATOR = {"num_categorical": 26, "num_numeric": 13, "max_cardinality": 1_000_000}
MODEL = {
    "name": "finalmlp",
    "embedding_dim": 10,
    "mlp1": {"hidden_units": [256, 256], "dropout": 0.2, "batch_norm": True},
    "mlp2": {"hidden_units": [256], "dropout": 0.2, "batch_norm": True},
    "fs_hidden_units": [256],
    "fs1_context": [],
    "fs2_context": ["c5"],
    "num_heads": 8,
}


def generate(folder: Path, parts: int) -> Path:
    """train/part-XXXXX.parquet (1M rows each), valid.parquet, test.parquet; made once,
    part by part (a finished part is kept)."""
    train = folder / "train"
    train.mkdir(parents=True, exist_ok=True)
    jobs = [(train / f"part-{i:05d}.parquet", 1000 + i, PART_ROWS) for i in range(parts)]
    jobs += [(folder / "valid.parquet", 900, EVAL_ROWS), (folder / "test.parquet", 901, EVAL_ROWS)]
    for path, seed, rows in jobs:
        if path.is_file():
            continue
        tick = time.perf_counter()
        frame = generate_synthetic(SyntheticOptions(num_rows=rows, seed=seed, **GENERATOR))
        tmp = path.with_suffix(".tmp")
        frame.write_parquet(tmp)
        tmp.replace(path)
        print(f"  {path.name}: {rows:,} rows in {time.perf_counter() - tick:.1f} s", flush=True)
    return folder


def config_for(data: Path, cache: Path, threads: int, buffer_rows: int) -> ExperimentConfig:
    options = SyntheticOptions(num_rows=PART_ROWS, **GENERATOR)
    raw = {
        "data": {
            "format": "parquet",
            "train": str(data / "train"),
            "valid": str(data / "valid.parquet"),
            "test": str(data / "test.parquet"),
            "features": synthetic_features(options),
            "cache_dir": str(cache),
            "streaming": {"buffer_rows": buffer_rows},
        },
        "model": MODEL,
        "train": {
            "batch_size": 4096,
            "learning_rate": 1e-3,
            "embedding_l2": 1e-5,
            "sparse_embeddings": True,
            "num_threads": threads,
            "device": "cpu",
            "progress": False,
        },
    }
    return parse_config(raw, origin="bench_streaming")


def in_memory(stream: StreamedSplit, parts: int) -> tuple[EncodedSplit, StreamedSplit]:
    """The first ``parts`` shards: read whole into arrays, and as a StreamedSplit of their own."""
    shards = sorted({b.shard for b in stream.blocks})[:parts]
    blocks = tuple(b for b in stream.blocks if b.shard in shards)
    subset = StreamedSplit(
        stream.folder,
        blocks,
        stream.num_categorical,
        stream.num_numeric,
        stream.sequence_lengths,
        stream.positives,
        stream.buffer_rows,
    )
    rows = _Rows.concat([_Rows(*stream.read_block(b)) for b in blocks])
    return EncodedSplit(rows.features, rows.label), subset


def fresh_trainer(config: ExperimentConfig, layout: Any) -> Trainer:
    seed_everything(2021)
    return Trainer(build_model(layout, config.model), config.train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=50, help="training parts of 1M rows")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=0, help="streamed steps; 0: one epoch")
    parser.add_argument("--memory-parts", type=int, default=4)
    parser.add_argument("--memory-steps", type=int, default=300)
    parser.add_argument("--buffer-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path.home() / ".cache" / "finalmlp" / "bench"
    )
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = args.cache_dir / f"stream_{args.parts}x1m"
    print(f"data: {data}", flush=True)
    generate(data, args.parts)
    if args.generate_only:
        return
    out = args.out or ROOT / "docs" / "results" / f"streaming_{args.parts}m.json"

    with tempfile.TemporaryDirectory(prefix="bench-stream-", dir=args.cache_dir) as scratch:
        config = config_for(data, Path(scratch), args.threads, args.buffer_rows)
        with PeakMemory() as memory:
            tick = time.perf_counter()
            prepared = prepare_data(config.data)
            seconds = time.perf_counter() - tick
        stream = prepared.train_stream
        assert stream is not None
        rows = stream.num_rows + sum(s.num_rows for s in prepared.splits.values())
        prep = {"rows": rows, "train_rows": stream.num_rows, "seconds": round(seconds, 1),
                "rows_per_s": rate(rows, seconds), **memory.report()}  # fmt: skip
        print(f"preprocess: {json.dumps(prep)}", flush=True)
        layout = prepared.processor.layout
        tables = {"table_rows": sum(layout.table_sizes), "fields": layout.num_fields}

        # in-memory reference vs streaming over the same shards, alternating
        arrays, subset = in_memory(stream, args.memory_parts)
        compare: dict[str, list[dict[str, Any]]] = {"in_memory": [], "streaming": []}
        for kind in ("in_memory", "streaming", "streaming", "in_memory"):
            trainer = fresh_trainer(config, layout)
            loader = (
                BatchLoader(arrays, 4096, shuffle=True, seed=1)
                if kind == "in_memory"
                else StreamingLoader(subset, 4096, seed=1)
            )
            result = timed_steps(trainer, loader, args.memory_steps)
            compare[kind].append(result)
            print(f"{kind}: {json.dumps(result)}", flush=True)
        # the reference arrays (and the loader and model that hold them) go before the epoch
        # whose peak memory is measured
        del arrays, loader, trainer
        gc.collect()
        best = {k: max(r["samples_per_s"] for r in v) for k, v in compare.items()}

        trainer = fresh_trainer(config, layout)
        with PeakMemory() as memory:
            full = timed_steps(trainer, StreamingLoader(stream, 4096, seed=1), args.steps)
        full.update(memory.report())
        print(f"streaming epoch: {json.dumps(full)}", flush=True)

    report = {
        "benchmark": "bench_streaming",
        "machine": machine(),
        "commit": commit(),
        "config": {
            "parts": args.parts,
            "part_rows": PART_ROWS,
            "threads": args.threads,
            "buffer_rows": args.buffer_rows,
            "memory_parts": args.memory_parts,
            "memory_steps": args.memory_steps,
            "model": MODEL,
            "command": " ".join(sys.argv),
        },
        "layout": tables,
        "preprocess": prep,
        "loader_comparison": {
            **compare,
            "best_samples_per_s": best,
            "streaming_over_in_memory": best["streaming"] / best["in_memory"],
        },
        "streaming_train": full,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"streaming/in-memory samples/s: {best['streaming'] / best['in_memory']:.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
