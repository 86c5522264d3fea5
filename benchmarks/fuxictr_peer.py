"""FuxiCTR 2.3.10's side of bench_vs_fuxictr.py: the same stages as ours_peer.py, run with
FuxiCTR's own data pipeline, layers, BaseModel and training step; one JSON line out.

Runs inside ``benchmarks/.fuxictr-venv`` (made by ``benchmarks/fuxictr_env.sh``). The wheel
ships FuxiCTR's layers, BaseModel and data pipeline but not its model zoo, so FinalMLP is
built here on FuxiCTR's own parts (FeatureEmbedding, MLP_Block, BaseModel), following the
public model-zoo definition (``model_zoo/FinalMLP/src/FinalMLP.py``) operation for operation:
per-row gates (a context-free gate repeats its learned vector over the batch, as there), the
bilinear fusion as two batched matmuls, a sigmoid output and FuxiCTR's BCE loss.

The stages, as FuxiCTR's ``run_expid.py`` runs them:

- preprocess: ``FeatureProcessor`` + ``build_dataset`` from the raw CSVs: Polars reads and
  counts, the processor fits on train, Ray Data transforms every split into Parquet
  (``data_root/<dataset_id>/{train,valid,test}.parquet``); Ray is started here with
  ``num_cpus=--threads`` (FuxiCTR would start it with all cores); rows/s over all rows read;
- train: ``BaseModel.train_step`` (forward, BCE, embedding regularizer over whole tables,
  backward, clipping at 10, Adam) over FuxiCTR's shuffled Parquet loader (Ray Data,
  ``RankDataLoader``) for ``--steps`` batches (0: one epoch), no validation; samples/s over
  the loop's wall time (the loader object is built before the clock starts);
- inference: ``BaseModel.predict`` over the test split's loader, batch 4096;
  ``rows_per_s_model_only``: ``forward`` over the test split's Parquet read into memory;
- end-to-end scoring: the raw test CSV in, probabilities out (CSV), with the fitted processor
  and the trained model: FuxiCTR's read + preprocess, its Ray transform to Parquet, its test
  loader and ``BaseModel.predict`` (``score_file``);
- latency: one row of a test batch per call through ``forward`` under ``no_grad``.

Usage (normally through the driver):
    benchmarks/.fuxictr-venv/bin/python benchmarks/fuxictr_peer.py --dataset frappe_x1 \
        --data ../shared/data/frappe_x1 --threads 2 --steps 0 --workdir /tmp/fx
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import ray
import torch
from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.preprocess.build_dataset import transform as fuxictr_transform
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.torch_utils import seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuxictr_model import FinalMLP, Inputs
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


def feature_cols(spec: BenchSpec) -> list[dict[str, Any]]:
    cols: list[dict[str, Any]] = []
    for column in spec.fields:
        if column.kind == "categorical":
            cols.append({"name": column.name, "active": True, "dtype": "str",
                         "type": "categorical", "min_categr_count": column.min_count})  # fmt: skip
        else:
            cols.append({"name": column.name, "active": True, "dtype": "float",
                         "type": "numeric", "normalizer": "StandardScaler"})  # fmt: skip
    return cols


def preprocess(
    spec: BenchSpec, paths: dict[str, Path], root: Path
) -> tuple[FeatureProcessor, FeatureMap, dict]:
    """FeatureProcessor + build_dataset, as run_expid.py does for ``data_format: csv``."""
    dataset_id = spec.dataset.replace("-", "_")
    encoder = FeatureProcessor(
        feature_cols=feature_cols(spec),
        label_col={"name": spec.label, "dtype": "float"},
        dataset_id=dataset_id,
        data_root=str(root),
    )
    train, valid, test = build_dataset(
        encoder,
        train_data=str(paths["train"]),
        valid_data=str(paths["valid"]),
        test_data=str(paths["test"]),
        data_format="csv",
    )
    feature_map = FeatureMap(dataset_id, str(root / dataset_id))
    feature_map.load(
        str(root / dataset_id / "feature_map.json"), {"embedding_dim": spec.embedding_dim}
    )
    return encoder, feature_map, {"train": train, "valid": valid, "test": test}


def score_file(
    encoder: FeatureProcessor, feature_map: FeatureMap, model: FinalMLP, raw: Path, out: Path
) -> dict[str, Any]:
    """End-to-end batch scoring of a raw CSV with the fitted processor and trained model, as
    FuxiCTR does it for new data: read + preprocess (Polars), transform to Parquet (Ray),
    its test loader, ``BaseModel.predict`` in batches of 4096, probabilities written as CSV."""
    tick = time.perf_counter()
    ddf = encoder.preprocess(encoder.read_data(str(raw), data_format="csv"))
    fuxictr_transform(encoder, ddf, split="score")
    loader = RankDataLoader(
        feature_map, stage="test", test_data=str(Path(encoder.data_dir) / "score.parquet"),
        batch_size=INFERENCE_BATCH, shuffle=False, data_format="csv",
    )  # fmt: skip
    scores = model.predict(loader)
    pl.DataFrame({"score": np.asarray(scores, dtype=np.float64)}).write_csv(out)
    seconds = time.perf_counter() - tick
    rows = len(scores)
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rate(rows, seconds)}


def train_loop(model: FinalMLP, loader: Any, spec: BenchSpec, steps: int) -> dict[str, Any]:
    """``steps`` of BaseModel.train_step (0: one epoch), as BaseModel.train_epoch runs them."""
    wanted = len(loader) if steps == 0 else min(steps, len(loader))
    model._max_gradient_norm = spec.max_grad_norm  # what BaseModel.fit sets before its epochs
    model.train()
    label = model.feature_map.labels[0]
    samples, loss, done = 0, float("nan"), 0
    started = time.perf_counter()
    batches = iter(loader)
    for step, batch in enumerate(batches, start=1):
        loss = model.train_step(batch).item()
        samples += int(batch[label].shape[0])
        done = step
        if step == wanted:
            break
    seconds = time.perf_counter() - started
    del batches
    return {
        "steps": done,
        "samples": samples,
        "seconds": round(seconds, 3),
        "samples_per_s": rate(samples, seconds),
        "last_loss": loss,
    }


def inference(model: FinalMLP, loader: Any, parquet: str) -> tuple[dict[str, Any], Inputs]:
    """BaseModel.predict over the test loader, and ``forward`` over the same rows held in
    memory (``rows_per_s_model_only``); also returns the first batch (for latency)."""
    model.eval()
    first = next(iter(loader))
    with torch.no_grad():
        model.forward(first)  # warm-up
    tick = time.perf_counter()
    scores = model.predict(loader)
    seconds = time.perf_counter() - tick
    table = pl.read_parquet(parquet)
    columns = {name: torch.from_numpy(table[name].to_numpy()) for name in first}
    rows = table.height
    tick = time.perf_counter()
    with torch.no_grad():
        for start in range(0, rows, INFERENCE_BATCH):
            batch = {
                name: tensor[start : start + INFERENCE_BATCH] for name, tensor in columns.items()
            }
            model.forward(batch)["y_pred"].data.cpu().numpy()
    model_only = time.perf_counter() - tick
    report = {
        "rows": len(scores),
        "batch_size": INFERENCE_BATCH,
        "seconds": round(seconds, 3),
        "rows_per_s": rate(len(scores), seconds),
        "rows_per_s_model_only": rate(rows, model_only),
    }
    return report, first


def single_row_latency(model: FinalMLP, batch: Inputs, calls: int) -> dict[str, Any]:
    model.eval()
    size = len(next(iter(batch.values())))

    def score(i: int) -> np.ndarray:
        row = {name: tensor[i % size : i % size + 1] for name, tensor in batch.items()}
        with torch.no_grad():
            return model.forward(row)["y_pred"].data.cpu().numpy()

    return latency_ms(score, calls)


def start_ray(threads: int) -> None:
    """Ray as FuxiCTR starts it, but with ``threads`` CPUs (FuxiCTR would take all cores)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=threads,
        include_dashboard=False,
        ignore_reinit_error=True,
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=("frappe_x1", "criteo-like"))
    parser.add_argument("--data", type=Path, required=True, help="folder of train/valid/test.csv")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--steps", type=int, default=0, help="training steps; 0: one epoch")
    parser.add_argument("--latency-calls", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, help="FuxiCTR's data_root/model_root (fresh)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fuxictr-peer-"))
    if (workdir / "data").exists():
        raise SystemExit(
            f"{workdir}/data exists: FuxiCTR would skip preprocessing; use a new --workdir"
        )
    spec = bench_spec(args.dataset, args.data)
    paths = split_paths(args.data)
    rows = sum(count_csv_rows(p) for p in paths.values())
    seed_everything(spec.seed)

    with PeakMemory() as memory:
        tick = time.perf_counter()
        start_ray(args.threads)
        encoder, feature_map, parquet = preprocess(spec, paths, workdir / "data")
        seconds = time.perf_counter() - tick
    prep = {"rows": rows, "seconds": round(seconds, 3), "rows_per_s": rate(rows, seconds)}
    prep.update(memory.report())

    model = FinalMLP(feature_map, spec, str(workdir / "models"))
    train_gen, _ = RankDataLoader(
        feature_map, stage="train", train_data=parquet["train"], batch_size=spec.batch_size,
        shuffle=True, data_format="csv",
    )  # fmt: skip
    with PeakMemory() as memory:
        train = train_loop(model, train_gen, spec, args.steps)
    train.update(memory.report())

    test_gen = RankDataLoader(
        feature_map, stage="test", test_data=parquet["test"], batch_size=INFERENCE_BATCH,
        shuffle=False, data_format="csv",
    )  # fmt: skip
    infer, first_batch = inference(model, test_gen, parquet["test"])
    infer["end_to_end"] = score_file(
        encoder, feature_map, model, paths["test"], workdir / "scores.csv"
    )
    result = {
        "impl": "fuxictr",
        "versions": {
            name: metadata.version(name) for name in ("fuxictr", "torch", "polars", "ray", "numpy")
        },
        "polars_runtime": pl.__version__,
        "dataset": args.dataset,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "preprocess": prep,
        "train": train,
        "inference": infer,
        "latency": single_row_latency(model, first_batch, args.latency_calls),
    }
    ray.shutdown()
    write_result(result, args.out)


if __name__ == "__main__":
    main()
