"""Scoring with a run directory: evaluate a labelled file, or write one score per input row.

Uses the run's own data config and fitted FeatureProcessor, so a file is read and encoded
exactly as the training data was. Scoring streams the file in chunks
(:mod:`finalmlp.serve.batch`); evaluation reads it whole (it needs every label for the AUC).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from finalmlp.bundle import Run, load_run
from finalmlp.data.dataset import EncodedSplit, encode_frame
from finalmlp.data.readers import read_file
from finalmlp.serve.batch import DEFAULT_CHUNK_ROWS, Backend, file_config, score_file
from finalmlp.train.metrics import compute_metrics
from finalmlp.train.progress import console
from finalmlp.train.trainer import predict_proba


def read_for_run(run: Run, path: Path, require_label: bool) -> EncodedSplit:
    """Read and encode a raw file with the run's own data config and fitted processor.

    With ``require_label=False`` (scoring) the label column is neither read nor encoded, so a
    file whose label is blank, not 0/1 or absent scores the same.
    """
    data_config = file_config(run.config.data, path)
    frame = read_file(path, data_config, require_label=require_label)
    return encode_frame(run.processor, frame, data_config, labelled=require_label)


def evaluate_run(run_dir: Path, data_file: Path) -> dict[str, float]:
    run = load_run(run_dir)
    split = read_for_run(run, data_file, require_label=True)
    assert split.label is not None
    probs = predict_proba(run.model, split, run.config.train.eval_batch_size)
    return compute_metrics(split.label, probs, split.group)


def predict_file(
    run_dir: Path,
    input_file: Path,
    output_file: Path,
    *,
    id_columns: Sequence[str] = (),
    backend: Backend = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> int:
    """Score every row of ``input_file`` (streamed in chunks); writes the id columns and one
    ``score`` per input row, in order. Returns the number of rows."""
    report = score_file(
        run_dir,
        input_file,
        output_file,
        id_columns=id_columns,
        backend=backend,
        chunk_rows=chunk_rows,
    )
    console.print(
        f"scored {report.rows:,} rows in {report.seconds:.1f} s ({report.rows_per_s:,.0f} "
        f"rows/s) with {report.backend} [{report.choice}] -> {output_file}",
        markup=False,
    )
    return report.rows
