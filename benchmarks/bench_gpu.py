"""GPU training throughput: finalmlp vs FuxiCTR 2.3.10's FinalMLP on one CUDA device.

Per dataset (frappe_x1, criteo-like), in one process, alternating ours / FuxiCTR / FuxiCTR /
ours, the same FinalMLP settings as bench_vs_fuxictr.py (vs_fuxictr_common.py), batch 4096:

- ours: our preprocessing of the raw CSVs, then the Trainer's own step
  (``Trainer._train_step``: forward, BCE, embedding L2, backward, clipping, Adam) over the
  shuffled in-memory BatchLoader, model on the GPU; fp32 as the reference, plus our tf32 and
  bf16 options (``train.precision``);
- FuxiCTR: FinalMLP built on FuxiCTR's layers (fuxictr_model.py) on the GPU (``gpu=0``),
  ``BaseModel.train_step`` on batches of random ids within its vocabularies, held in memory
  (CPU tensors moved by its ``get_inputs``, as its loader's batches are). Its Ray/Parquet
  loader is left out (Ray cannot be installed on the GPU machine here), so FuxiCTR's figure
  is an upper bound of its training loop: the model and step alone.

samples/s = timed steps x 4096 / wall time, after warm-up steps, with CUDA synchronised.

Usage (on the GPU machine; the FuxiCTR wheel importable, FuxiCTR's feature_map.json for each
dataset from a CPU run of fuxictr_peer.py):
    python benchmarks/bench_gpu.py --frappe DIR --fuxictr-maps DIR --out gpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_fuxictr import criteo_like_data, finalmlp_flops
from ours_peer import experiment_config
from vs_fuxictr_common import bench_spec, rate, split_paths

from finalmlp.data.dataset import prepare_data
from finalmlp.data.split import BatchLoader
from finalmlp.models import build_model
from finalmlp.train.run import seed_everything
from finalmlp.train.trainer import Trainer

BATCH = 4096


def timed(step: Any, batches: list[Any], warmup: int, steps: int) -> dict[str, Any]:
    for i in range(warmup):
        step(batches[i % len(batches)])
    torch.cuda.synchronize()
    tick = time.perf_counter()
    for i in range(steps):
        step(batches[(warmup + i) % len(batches)])
    torch.cuda.synchronize()
    seconds = time.perf_counter() - tick
    return {
        "steps": steps,
        "seconds": round(seconds, 3),
        "samples_per_s": rate(steps * BATCH, seconds),
    }


def ours(dataset: str, data: Path, precision: str, warmup: int, steps: int) -> dict[str, Any]:
    spec = bench_spec(dataset, data)
    config = experiment_config(spec, split_paths(data), threads=torch.get_num_threads())
    train_config = config.train.model_copy(update={"device": "cuda", "precision": precision})
    prepared = prepare_data(config.data, cache=False)
    seed_everything(spec.seed)
    model = build_model(prepared.processor.layout, config.model).cuda()
    trainer = Trainer(model, train_config)
    model.train()
    loader = BatchLoader(prepared.splits["train"], BATCH, shuffle=True, seed=spec.seed)
    batches = [b for b in loader.batches() if b.size == BATCH]
    result = timed(lambda b: trainer._train_step(b, b.size), batches, warmup, steps)
    return {**result, "precision": precision}


def fuxictr(dataset: str, data: Path, feature_map_json: Path, warmup: int, steps: int) -> dict:
    from fuxictr.features import FeatureMap
    from fuxictr_model import FinalMLP

    spec = bench_spec(dataset, data)
    dataset_id = dataset.replace("-", "_")
    feature_map = FeatureMap(dataset_id, str(feature_map_json.parent))
    feature_map.load(str(feature_map_json), {"embedding_dim": spec.embedding_dim})
    torch.manual_seed(spec.seed)
    model = FinalMLP(feature_map, spec, "/tmp/fuxictr-models", gpu=0)
    model._max_gradient_norm = spec.max_grad_norm
    model.train()
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(16):
        batch: dict[str, torch.Tensor] = {}
        for name, info in feature_map.features.items():
            if info["type"] == "numeric":
                batch[name] = torch.randn(BATCH)
            else:
                batch[name] = torch.from_numpy(rng.integers(1, info["vocab_size"], BATCH))
        batch[feature_map.labels[0]] = torch.from_numpy(rng.integers(0, 2, BATCH)).float()
        batches.append(batch)
    result = timed(lambda b: model.train_step(b), batches, warmup, steps)
    return {**result, "precision": "fp32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frappe", type=Path, required=True, help="frappe_x1 CSV folder")
    parser.add_argument("--criteo-rows", type=int, default=2_000_000)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/finalmlp-bench"))
    parser.add_argument("--fuxictr-maps", type=Path, required=True,
                        help="folder with <dataset_id>/feature_map.json")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "bench_gpu",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "command": " ".join(sys.argv),
        "datasets": {},
    }
    folders = {
        "frappe_x1": args.frappe,
        "criteo-like": criteo_like_data(args.criteo_rows, args.cache_dir),
    }
    for dataset, data in folders.items():
        maps = args.fuxictr_maps / dataset.replace("-", "_") / "feature_map.json"
        runs: dict[str, list[dict[str, Any]]] = {"finalmlp": [], "fuxictr": []}
        for impl in ("finalmlp", "fuxictr", "fuxictr", "finalmlp"):
            if impl == "finalmlp":
                result = ours(dataset, data, "fp32", args.warmup, args.steps)
            else:
                result = fuxictr(dataset, data, maps, args.warmup, args.steps)
            runs[impl].append(result)
            print(dataset, impl, json.dumps(result), flush=True)
        extra = [ours(dataset, data, p, args.warmup, args.steps) for p in ("tf32", "bf16")]
        for result in extra:
            print(dataset, "finalmlp", json.dumps(result), flush=True)
        best = {k: max(r["samples_per_s"] for r in v) for k, v in runs.items()}
        report["datasets"][dataset] = {
            "runs": runs,
            "ours_other_precisions": extra,
            "best_fp32": best,
            "ratio_fp32_ours_over_theirs": best["finalmlp"] / best["fuxictr"],
            "train_flops_per_sample": finalmlp_flops(bench_spec(dataset, data))["per_row_gates"][
                "train_flops"
            ],
        }
        print(
            dataset, "ours/theirs fp32:", round(best["finalmlp"] / best["fuxictr"], 2), flush=True
        )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
