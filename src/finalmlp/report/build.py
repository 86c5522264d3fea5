"""``write_report``: score a run's valid and test splits again and write ``report.html``.

The splits are re-read from the data the run's config names, through the same prepared-data
path as training (so the encoded-data cache makes it fast); when the cache holds a processor
other than the run's (the data changed since), the raw files are encoded with the run's own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from finalmlp.bundle import Run, load_run
from finalmlp.data.dataset import EncodedSplit, encode_frame, load_frames, prepare_data
from finalmlp.data.split import BatchLoader
from finalmlp.features.processor import EncodedFeatures, FeatureProcessor
from finalmlp.inference import predict_proba
from finalmlp.io import atomic_write_text
from finalmlp.report import sections
from finalmlp.report.attention import attention_section, attention_summary
from finalmlp.report.gates import mean_gates
from finalmlp.report.html import Section, render_html
from finalmlp.report.importance import permutation_importance
from finalmlp.report.selection import selection_section

REPORT_FILE = "report.html"
VALID_MAX_ROWS = 20_000  # importance and gates on at most this many validation rows
VALID_SEED = 0  # seeds that sample and the permutations: the same report every time


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's report (default ``RUN_DIR/report.html``, outside the bundle's hashed
    files) atomically; returns its path.

    Raises:
        DataError: ``run_dir`` is not a run directory, or its data cannot be read.
    """
    run = load_run(run_dir)
    splits = load_splits(run)
    page = render_html(
        f"finalmlp report: {run.path.resolve().name}",
        build_sections(run, splits),
        subtitle=f"{run.path.resolve()} - model {run.config.model.name}",
    )
    target = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    atomic_write_text(target, page)
    return target


def load_splits(run: Run) -> dict[str, EncodedSplit]:
    """The run's valid and test splits, encoded by the run's own fitted processor."""
    data = prepare_data(run.config.data)
    if _state(data.processor) == _state(run.processor):
        return {name: data.splits[name] for name in ("valid", "test")}
    frames = load_frames(run.config.data)
    return {
        name: encode_frame(run.processor, frames[name], run.config.data)
        for name in ("valid", "test")
    }


def _state(processor: FeatureProcessor) -> str:
    return json.dumps(processor.to_dict(), sort_keys=True)


def build_sections(run: Run, splits: dict[str, EncodedSplit]) -> list[Section]:
    """Summary, history (when recorded), test curves, gates (gated models), importance,
    selection, attention over histories (attention-pooled sequences)."""
    batch_size = run.config.train.eval_batch_size
    test = splits["test"]
    assert test.label is not None  # prepared splits are labelled
    labels = np.asarray(test.label)  # (N, T), NaN where missing
    probs, calibrated = served_probs(run, predict_proba(run.model, test, batch_size))
    tasks = run.tasks
    built = [
        sections.summary_section(run.metrics, run.path, labels, probs, calibrated, tasks),
        sections.history_section(run.metrics.get("history")),
    ]
    for task, task_labels, task_probs in sections.task_columns(labels, probs, tasks):
        built.append(sections.test_section(task_labels, task_probs, calibrated, task))
    layout = run.processor.layout
    valid = sample_rows(splits["valid"], VALID_MAX_ROWS, VALID_SEED)
    gates = mean_gates(run.model, valid, layout, batch_size)
    built.append(sections.gates_section(layout.field_names, gates, valid.num_rows))
    built.append(sections.experts_section(expert_summary(run, valid, batch_size), tasks))
    importances = permutation_importance(
        run.model, valid, layout, batch_size=batch_size, seed=VALID_SEED
    )
    built.append(sections.importance_section(layout, importances, valid.num_rows, VALID_SEED))
    built.append(selection_section(run.path))
    built.append(attention_report(run, test, batch_size))
    return [section for section in built if section is not None]


def attention_report(run: Run, test: EncodedSplit, batch_size: int) -> Section | None:
    """Attention weights over the histories of (at most VALID_MAX_ROWS) test rows, when the
    model pools a sequence by attention."""
    sample = sample_rows(test, VALID_MAX_ROWS, VALID_SEED)
    summaries = attention_summary(run.model, run.processor, sample, batch_size)
    layout = run.processor.layout
    softmax = any(layout.pooling(i).softmax for i in range(len(layout.sequence_fields)))
    return attention_section(summaries, sample.num_rows, softmax)


def expert_summary(run: Run, split: EncodedSplit, batch_size: int) -> dict | None:
    """The model's expert statistics on ``split`` (mixture-of-experts models), else None."""
    stats = getattr(run.model, "expert_stats", None)
    if not callable(stats):
        return None
    batches = BatchLoader(split, batch_size)
    return dict(stats(iter(batches)).to_dict())


def served_probs(run: Run, probs: np.ndarray) -> tuple[np.ndarray, bool]:
    """The probabilities as the bundle serves them (through its calibrator, when the bundle
    has one), and whether a calibrator was applied."""
    calibrate = getattr(run, "calibrate", None)
    if getattr(run, "calibration", None) is None or not callable(calibrate):
        return probs, False
    return np.asarray(calibrate(probs), dtype=np.float64), True


def sample_rows(split: EncodedSplit, max_rows: int, seed: int) -> EncodedSplit:
    """At most ``max_rows`` rows of ``split`` (a seeded sample, in row order)."""
    if split.num_rows <= max_rows:
        return split
    rows = np.sort(np.random.default_rng(seed).choice(split.num_rows, max_rows, replace=False))
    features = split.features
    sampled = EncodedFeatures(
        np.asarray(features.categorical)[rows],
        np.asarray(features.numeric)[rows],
        tuple(np.asarray(s)[rows] for s in features.sequences),
    )
    label = None if split.label is None else np.asarray(split.label)[rows]
    group = None if split.group is None else np.asarray(split.group)[rows]
    return EncodedSplit(sampled, label, group)
