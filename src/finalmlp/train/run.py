"""One training run from a config: prepare data, build the model, train, evaluate, save."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from finalmlp.bundle import Run, load_run, save_run
from finalmlp.data.dataset import EncodedSplit, encode_frame, prepare_data
from finalmlp.data.readers import read_file
from finalmlp.errors import ConfigError
from finalmlp.io import atomic_write
from finalmlp.models import build_model
from finalmlp.schema import DataConfig, ExperimentConfig
from finalmlp.train.metrics import compute_metrics
from finalmlp.train.progress import console
from finalmlp.train.trainer import Trainer, predict_proba


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use cpu")
    return device


def train_from_config(config: ExperimentConfig, out: Path | None = None) -> dict[str, Any]:
    """Train and evaluate; write the run directory to ``out`` when given. Returns the metrics."""
    if config.train.num_threads is not None:
        torch.set_num_threads(config.train.num_threads)
    data = prepare_data(config.data)
    rows = {name: split.num_rows for name, split in data.splits.items()}
    source = "cache" if data.from_cache else "raw files"
    console.print(
        f"data: {rows['train']:,} train / {rows['valid']:,} valid / {rows['test']:,} test rows, "
        f"{data.processor.layout.num_fields} fields, from {source} in {data.seconds:.1f} s"
    )
    seed_everything(config.train.seed)
    device = resolve_device(config.train.device)
    model = build_model(data.processor.layout, config.model).to(device)
    num_parameters = sum(p.numel() for p in model.parameters())
    console.print(f"model: {config.model.name}, {num_parameters:,} parameters, on {device}")
    trainer = Trainer(model, config.train)
    result = trainer.fit(data.splits["train"], data.splits["valid"])
    metrics: dict[str, Any] = {
        "model": config.model.name,
        "valid": trainer.evaluate(data.splits["valid"]),
        "test": trainer.evaluate(data.splits["test"]),
        "epochs": result.epochs,
        "steps": result.steps,
        "best_epoch": result.best.epoch if result.best else None,
        "stopped_early": result.stopped_early,
        "train_samples_per_s": result.train_samples_per_s,
        "train_seconds": result.train_seconds,
        "preprocess_seconds": data.seconds,
        "preprocess_from_cache": data.from_cache,
        "num_parameters": num_parameters,
        "rows": rows,
        "history": result.history_dicts(),
    }
    if out is not None:
        save_run(out, config, data.processor, model, metrics)
    return metrics


def read_for_run(run: Run, path: Path, require_label: bool) -> EncodedSplit:
    """Read and encode a raw file with the run's own data config and fitted processor."""
    data_config = _file_config(run.config.data, path)
    frame = read_file(path, data_config, require_label=require_label)
    return encode_frame(run.processor, frame, data_config)


def _file_config(config: DataConfig, path: Path) -> DataConfig:
    if path.suffix == ".parquet":
        return config.model_copy(update={"format": "parquet"})
    if config.format == "synthetic":
        fmt = "tsv" if path.suffix == ".tsv" else "csv"
        return config.model_copy(update={"format": fmt})
    return config


def evaluate_run(run_dir: Path, data_file: Path) -> dict[str, float]:
    run = load_run(run_dir)
    split = read_for_run(run, data_file, require_label=True)
    assert split.label is not None
    probs = predict_proba(run.model, split, run.config.train.eval_batch_size)
    return compute_metrics(split.label, probs, split.group)


def predict_file(run_dir: Path, input_file: Path, output_file: Path) -> int:
    """Score every row of ``input_file``; writes one ``score`` per input row, in order."""
    started = time.perf_counter()
    run = load_run(run_dir)
    split = read_for_run(run, input_file, require_label=False)
    probs = predict_proba(run.model, split, run.config.train.eval_batch_size)
    frame = pl.DataFrame({"score": probs})
    if output_file.suffix == ".parquet":
        atomic_write(output_file, lambda tmp: frame.write_parquet(tmp))
    else:
        atomic_write(output_file, lambda tmp: frame.write_csv(tmp))
    console.print(
        f"scored {split.num_rows:,} rows in {time.perf_counter() - started:.1f} s -> {output_file}"
    )
    return split.num_rows
