"""Scoring with a run directory: evaluate a labelled file, write one score per input row, or
(re)fit the run's calibration on its own validation split.

Uses the run's own data config and fitted FeatureProcessor, so a file is read and encoded
exactly as the training data was. Scoring streams the file in chunks
(:mod:`finalmlp.serve.batch`); evaluation reads it whole (it needs every label for the AUC).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finalmlp.bundle import Run, load_run, replace_calibration
from finalmlp.calibration import fit_calibration
from finalmlp.data.dataset import EncodedSplit, encode_frame, load_frames, prepare_data
from finalmlp.data.readers import read_file
from finalmlp.errors import ConfigError
from finalmlp.inference import predict_proba
from finalmlp.metrics import task_metrics
from finalmlp.serve.batch import DEFAULT_CHUNK_ROWS, Backend, file_config, score_file
from finalmlp.train.progress import console


def read_for_run(run: Run, path: Path, require_label: bool) -> EncodedSplit:
    """Read and encode a raw file with the run's own data config and fitted processor.

    With ``require_label=False`` (scoring) the label column is neither read nor encoded, so a
    file whose label is blank, not 0/1 or absent scores the same.
    """
    data_config = file_config(run.config.data, path)
    frame = read_file(path, data_config, require_label=require_label)
    return encode_frame(run.processor, frame, data_config, labelled=require_label)


def evaluate_run(run_dir: Path, data_file: Path, calibrated: bool = True) -> dict[str, float]:
    """AUC and logloss (and group AUC) of the run's scores on a labelled file, per task (see
    :func:`finalmlp.metrics.task_metrics`): the scores it serves, through its calibration when
    it has one, unless ``calibrated=False``."""
    run = load_run(run_dir)
    split = read_for_run(run, data_file, require_label=True)
    assert split.label is not None
    probs = predict_proba(run.model, split, run.config.train.eval_batch_size)
    if calibrated:
        probs = run.calibrate(probs)
    return task_metrics(split.label, probs, run.tasks, split.group)


def predict_file(
    run_dir: Path,
    input_file: Path,
    output_file: Path,
    *,
    id_columns: Sequence[str] = (),
    backend: Backend = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    calibrated: bool = True,
) -> int:
    """Score every row of ``input_file`` (streamed in chunks); writes the id columns and one
    ``score`` per input row (``score_<task>`` per task of a multi-task run), in order
    (calibrated when the run is, unless ``calibrated=False``). Returns the number of rows."""
    report = score_file(
        run_dir,
        input_file,
        output_file,
        id_columns=id_columns,
        backend=backend,
        chunk_rows=chunk_rows,
        calibrated=calibrated,
    )
    calibration = "" if report.calibration == "none" else f", {report.calibration} calibration"
    console.print(
        f"scored {report.rows:,} rows in {report.seconds:.1f} s ({report.rows_per_s:,.0f} "
        f"rows/s) with {report.backend} [{report.choice}]{calibration} -> {output_file}",
        markup=False,
    )
    return report.rows


def calibrate_run(run_dir: Path, method: str) -> dict[str, Any] | None:
    """Fit ``method`` (platt, isotonic; none removes it) on the run's validation split, store
    it in the run (calibration.json, metrics.json's ``calibration``) and return its effect on
    the validation and test splits (None for ``none``).

    Raises:
        ConfigError: an unknown method.
        DataError: not a run directory, data that cannot be read, or a one-class split.
    """
    if method not in ("platt", "isotonic", "none"):
        raise ConfigError(
            f"calibration method must be platt, isotonic or none (removes it), got {method!r}"
        )
    run = load_run(run_dir)
    metrics = {k: v for k, v in run.metrics.items() if k != "calibration"}
    if method == "none":
        replace_calibration(run, None, metrics)
        return None
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, split in run_splits(run).items():
        assert split.label is not None
        raw = predict_proba(run.model, split, run.config.train.eval_batch_size)
        scored[name] = (split.label, raw)
    calibration, metrics["calibration"] = fit_calibration(method, scored, run.tasks)
    replace_calibration(run, calibration, metrics)
    return dict(metrics["calibration"])


def run_splits(run: Run) -> dict[str, EncodedSplit]:
    """The run's validation and test splits, encoded by its own processor: from the data
    cache when it holds this processor's encoding, else read again from the data config."""
    config = run.config.data
    prepared = prepare_data(config)
    if prepared.processor.to_dict() == run.processor.to_dict():
        return {name: prepared.splits[name] for name in ("valid", "test")}
    frames = load_frames(config)  # the data changed since training: encode it as the run does
    return {name: encode_frame(run.processor, frames[name], config) for name in ("valid", "test")}
