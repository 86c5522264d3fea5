"""Scoring with a run directory: evaluate a labelled file, or write one score per input row.

Uses the run's own data config and fitted FeatureProcessor, so a file is read and encoded
exactly as the training data was.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from finalmlp.bundle import Run, load_run
from finalmlp.data.dataset import EncodedSplit, encode_frame
from finalmlp.data.readers import read_file
from finalmlp.io import atomic_write
from finalmlp.schema import DataConfig
from finalmlp.train.metrics import compute_metrics
from finalmlp.train.progress import console
from finalmlp.train.trainer import predict_proba


def read_for_run(run: Run, path: Path, require_label: bool) -> EncodedSplit:
    """Read and encode a raw file with the run's own data config and fitted processor.

    With ``require_label=False`` (scoring) the label column is neither read nor encoded, so a
    file whose label is blank, not 0/1 or absent scores the same.
    """
    data_config = _file_config(run.config.data, path)
    frame = read_file(path, data_config, require_label=require_label)
    return encode_frame(run.processor, frame, data_config, labelled=require_label)


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
