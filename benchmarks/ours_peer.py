"""Our side of bench_vs_fuxictr.py: preprocessing, training, scoring and single-row latency of
finalmlp on one dataset, as one JSON line (schema: vs_fuxictr_common.py).

Runs in the project's .venv; bench_vs_fuxictr.py starts it (and fuxictr_peer.py, the same
stages with FuxiCTR 2.3.10) with the same arguments. The stages:

- preprocess: ``prepare_data`` without the cache, raw train/valid/test CSVs -> fitted
  FeatureProcessor and encoded arrays of all three splits; rows/s over all rows read;
- train: the Trainer's own optimizer step (``Trainer._train_step``: forward, BCE loss,
  embedding L2, backward, clipping at 10, Adam) over the shuffled BatchLoader of the training
  split for ``--steps`` batches (0: one whole epoch), no validation; samples/s over the
  loop's wall time (the loader is built before the clock starts, as FuxiCTR's is);
- inference: the encoded test split scored in batches of 4096 as batch scoring serves it
  (``serving_model``: gates over one categorical field folded into lookups, then
  ``torch_probabilities``); ``rows_per_s_model_only``: the module as trained (no folding) on
  the same in-memory arrays, the counterpart of FuxiCTR's forward over in-memory tensors;
- end-to-end scoring: the raw test CSV in, probabilities out (CSV): the trained model saved
  as a run, then ``predict_file`` (what ``finalmlp predict`` runs: read and encode in chunks,
  score with the automatically chosen backend, write);
- latency: one encoded test row per call through the same served model, p50/p99.

Usage (normally through the driver):
    .venv/bin/python benchmarks/ours_peer.py --dataset frappe_x1 \
        --data ../shared/data/frappe_x1 --threads 2 --steps 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_fuxictr_common import (
    INFERENCE_BATCH,
    BenchSpec,
    PeakMemory,
    bench_spec,
    count_csv_rows,
    latency_ms,
    rate,
    split_paths,
    write_result,
)

import finalmlp
from finalmlp.bundle import save_run
from finalmlp.config import parse_config
from finalmlp.data.dataset import EncodedSplit, prepare_data
from finalmlp.data.split import BatchLoader
from finalmlp.features.processor import EncodedFeatures
from finalmlp.models import build_model
from finalmlp.predict import predict_file
from finalmlp.schema import ExperimentConfig
from finalmlp.serve.fold import serving_model
from finalmlp.serve.onnx import torch_probabilities
from finalmlp.train.run import seed_everything
from finalmlp.train.trainer import Trainer


def experiment_config(spec: BenchSpec, paths: dict[str, Path], threads: int) -> ExperimentConfig:
    features: list[dict[str, Any]] = []
    for column in spec.fields:
        if column.kind == "categorical":
            features.append(
                {"name": column.name, "type": "categorical", "min_count": column.min_count}
            )
        else:
            features.append({"name": column.name, "type": "numeric", "transform": "standard"})
    mlp = {"batch_norm": spec.batch_norm}
    raw = {
        "data": {
            "format": "csv",
            **{name: str(path) for name, path in paths.items()},
            "label": spec.label,
            "features": features,
        },
        "model": {
            "name": "finalmlp",
            "embedding_dim": spec.embedding_dim,
            "mlp1": {**mlp, "hidden_units": list(spec.mlp1), "dropout": spec.mlp1_dropout},
            "mlp2": {**mlp, "hidden_units": list(spec.mlp2), "dropout": spec.mlp2_dropout},
            "fs_hidden_units": list(spec.fs_hidden),
            "fs1_context": list(spec.fs1_context),
            "fs2_context": list(spec.fs2_context),
            "num_heads": spec.num_heads,
        },
        "train": {
            "batch_size": spec.batch_size,
            "learning_rate": spec.learning_rate,
            "embedding_l2": spec.embedding_l2,
            "max_grad_norm": spec.max_grad_norm,
            "seed": spec.seed,
            "num_threads": threads,
            "device": "cpu",
            "progress": False,
        },
    }
    return parse_config(raw, origin="bench_vs_fuxictr")


def rows_of(features: EncodedFeatures, start: int, stop: int) -> EncodedFeatures:
    return EncodedFeatures(
        features.categorical[start:stop],
        features.numeric[start:stop],
        tuple(s[start:stop] for s in features.sequences),
    )


def train_loop(
    trainer: Trainer, split: EncodedSplit, spec: BenchSpec, steps: int
) -> dict[str, Any]:
    """``steps`` optimizer steps (0: one epoch) on shuffled batches, as Trainer.fit takes them."""
    return timed_steps(
        trainer, BatchLoader(split, spec.batch_size, shuffle=True, seed=spec.seed), steps
    )


def timed_steps(trainer: Trainer, loader: Any, steps: int) -> dict[str, Any]:
    """``steps`` of the Trainer's own optimizer step (0: one pass) over ``loader`` (a
    BatchLoader or StreamingLoader), timed; the loader is built before the clock starts."""
    wanted = len(loader) if steps == 0 else min(steps, len(loader))
    trainer.model.train()
    samples, loss, done = 0, float("nan"), 0
    started = time.perf_counter()
    for step, batch in enumerate(loader.batches(), start=1):
        loss = trainer._train_step(batch, batch.size, step, 1)
        samples += batch.size
        done = step
        if step == wanted:
            break
    seconds = time.perf_counter() - started
    return {
        "steps": done,
        "samples": samples,
        "seconds": round(seconds, 3),
        "samples_per_s": rate(samples, seconds),
        "last_loss": loss,
    }


def inference(model: torch.nn.Module, features: EncodedFeatures) -> dict[str, Any]:
    served = serving_model(model)
    torch_probabilities(served, rows_of(features, 0, INFERENCE_BATCH), INFERENCE_BATCH)  # warm-up
    tick = time.perf_counter()
    torch_probabilities(served, features, INFERENCE_BATCH)
    seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    torch_probabilities(model, features, INFERENCE_BATCH)  # type: ignore[arg-type]
    unfolded = time.perf_counter() - tick
    return {
        "rows": features.num_rows,
        "batch_size": INFERENCE_BATCH,
        "seconds": round(seconds, 3),
        "rows_per_s": rate(features.num_rows, seconds),
        "rows_per_s_model_only": rate(features.num_rows, unfolded),
    }


def score_file(
    config: ExperimentConfig, prepared: Any, model: torch.nn.Module, raw: Path, workdir: Path | None
) -> dict[str, Any]:
    """The raw test CSV scored end to end as ``finalmlp predict RUN --data FILE`` does it."""
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="finalmlp-peer-") as tmp:
            return score_file(config, prepared, model, raw, Path(tmp))
    work = workdir
    run_dir = work / "run"
    save_run(run_dir, config, prepared.processor, model, {})  # type: ignore[arg-type]
    tick = time.perf_counter()
    rows = predict_file(run_dir, raw, work / "scores.csv")
    seconds = time.perf_counter() - tick
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rate(rows, seconds)}


def single_row_latency(model: torch.nn.Module, features: EncodedFeatures, calls: int) -> dict:
    served = serving_model(model)
    rows = features.num_rows
    return latency_ms(
        lambda i: torch_probabilities(served, rows_of(features, i % rows, i % rows + 1)), calls
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=("frappe_x1", "criteo-like"))
    parser.add_argument("--data", type=Path, required=True, help="folder of train/valid/test.csv")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=0, help="training steps; 0: one epoch")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, help="where the run and the scores are written")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--sparse-embeddings", action="store_true", help="train.sparse_embeddings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = bench_spec(args.dataset, args.data)
    paths = split_paths(args.data)
    rows = sum(count_csv_rows(p) for p in paths.values())
    config = experiment_config(spec, paths, args.threads)
    if args.sparse_embeddings:
        train_config = config.train.model_copy(update={"sparse_embeddings": True})
        config = config.model_copy(update={"train": train_config})

    with PeakMemory() as memory:
        tick = time.perf_counter()
        prepared = prepare_data(config.data, cache=False)
        seconds = time.perf_counter() - tick
    preprocess = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rate(rows, seconds)}
    preprocess.update(memory.report())

    seed_everything(spec.seed)
    model = build_model(prepared.processor.layout, config.model)
    trainer = Trainer(model, config.train)
    with PeakMemory() as memory:
        train = train_loop(trainer, prepared.splits["train"], spec, args.steps)
    train.update(memory.report())

    test = prepared.splits["test"].features
    scoring = inference(model, test)
    scoring["end_to_end"] = score_file(config, prepared, model, paths["test"], args.workdir)
    result = {
        "impl": "finalmlp",
        "versions": {
            "finalmlp": finalmlp.__version__,
            "torch": torch.__version__,
            "polars": pl.__version__,
            "numpy": np.__version__,
        },
        "dataset": args.dataset,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "sparse_embeddings": args.sparse_embeddings,
        "preprocess": preprocess,
        "train": train,
        "inference": scoring,
        "latency": single_row_latency(model, test, args.latency_calls),
    }
    write_result(result, args.out)


if __name__ == "__main__":
    main()
