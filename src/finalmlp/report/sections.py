"""The report's sections, each built from data that exist: a run without history gets no
history section, a model without gates no gate section."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from finalmlp.layout import FieldLayout
from finalmlp.report import curves, plots
from finalmlp.report.html import Image, Section, Table
from finalmlp.report.importance import FieldImportance

CALIBRATION_FILE = "calibration.json"


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: fixed digits for floats, thousands separators for ints."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    text = f"{value:,.{digits}f}"
    return text[1:] if text.startswith("-") and float(text.replace(",", "")) == 0 else text


def _image(figure: Any, alt: str, caption: str = "") -> Image:
    return Image(plots.png_bytes(figure), alt, caption)


# ----------------------------------------------------------------------------- summary
def summary_section(
    metrics: Mapping[str, Any],
    run_dir: Path,
    test_labels: np.ndarray,
    test_probs: np.ndarray,
    calibrated: bool = False,
    tasks: Sequence[str] = (),
) -> Section:
    """Saved valid/test metrics (a row per task when there are several), test ECE and
    average precision, calibration, training facts.

    Args:
        test_labels, test_probs: (N,) for one task, or (N, T) with NaN labels where missing.
        calibrated: ``test_probs`` went through the run's calibrator.
        tasks: the T task names (several tasks).
    """
    rows_of = metrics.get("rows") or {}
    has_gauc = any("gauc" in (metrics.get(s) or {}) for s in ("valid", "test"))
    several = len(tasks) > 1
    header = ["split", *(["task"] if several else []), "rows", "AUC", "logloss"]
    header += ["gAUC"] if has_gauc else []
    rows = []
    for split in ("valid", "test"):
        values = metrics.get(split) or {}
        for task in tasks if several else [None]:
            prefix = "" if task is None else f"{task}."
            row = [split, *([task] if task is not None else []), fmt(rows_of.get(split))]
            row += [fmt(values.get(prefix + "auc")), fmt(values.get(prefix + "logloss"))]
            rows.append(row + ([fmt(values.get(prefix + "gauc"))] if has_gauc else []))
    notes = []
    for name, labels, probs in task_columns(test_labels, test_probs, tasks):
        ece = curves.expected_calibration_error(labels, probs)
        which = "" if name is None else f" ({name})"
        notes.append(
            f"Test split re-scored{which}: expected calibration error {ece:.4f} "
            f"({curves.DEFAULT_BINS} equal-width bins), average precision "
            f"{_average_precision(labels, probs)}."
        )
    calibration_notes, calibration_tables = calibration_parts(metrics, run_dir, calibrated)
    tables = [Table(header, rows), *calibration_tables, _facts_table(metrics)]
    return Section("Summary", notes + calibration_notes, tables)


def task_columns(
    labels: np.ndarray, probs: np.ndarray, tasks: Sequence[str]
) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """(task name, labels, probabilities) of each task over its labelled rows; one task of a
    (N,) pair is named None."""
    if np.ndim(labels) == 1:
        return [(None, labels, probs)]
    out: list[tuple[str | None, np.ndarray, np.ndarray]] = []
    for t in range(labels.shape[1]):
        known = ~np.isnan(labels[:, t])
        name = tasks[t] if len(tasks) > 1 else None
        out.append((name, labels[known, t], probs[known, t]))
    return out


def _average_precision(labels: np.ndarray, probs: np.ndarray) -> str:
    if not (labels == 1).any():
        return "n/a (no positives)"
    return f"{curves.average_precision(labels, probs):.4f}"


def _facts_table(metrics: Mapping[str, Any]) -> Table:
    facts = [
        ("model", metrics.get("model")),
        ("parameters", metrics.get("num_parameters")),
        ("epochs", metrics.get("epochs")),
        ("best epoch", metrics.get("best_epoch")),
        ("stopped early", metrics.get("stopped_early")),
        ("training seconds", metrics.get("train_seconds")),
        ("train samples/s", metrics.get("train_samples_per_s")),
        ("processes", metrics.get("processes")),
    ]
    rows = [[name, fmt(value, 1)] for name, value in facts if value is not None]
    return Table(["training", "value"], rows)


def calibration_parts(
    metrics: Mapping[str, Any], run_dir: Path, applied: bool
) -> tuple[list[str], list[Table]]:
    """A "calibration: ..." line (and a before/after table) when ``metrics.json`` or
    ``calibration.json`` describe a calibration; nothing otherwise."""
    info: Any = metrics.get("calibration")
    file = run_dir / CALIBRATION_FILE
    if info is None and file.is_file():
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return [f"calibration: {CALIBRATION_FILE} is present but unreadable"], []
    if info is None:
        return [], []
    if not isinstance(info, Mapping):
        return [f"calibration: {info}"], []
    scalars = [f"{k} {fmt(v)}" for k, v in info.items() if isinstance(v, str | int | float)]
    line = "calibration: " + (", ".join(scalars[:8]) or "present")
    if applied:
        line += "; the test curves use the calibrated probabilities the bundle serves"
    return [line], _effect_tables(info)


def _effect_tables(info: Mapping[str, Any]) -> list[Table]:
    """Per split ``{"logloss_before": ..., ...}`` entries as one table, if there are any."""
    splits = {k: v for k, v in info.items() if isinstance(v, Mapping)}
    if not splits:
        return []
    columns = sorted({key for values in splits.values() for key in values})
    rows = [[name, *(fmt(values.get(key)) for key in columns)] for name, values in splits.items()]
    return [Table(["calibration", *(key.replace("_", " ") for key in columns)], rows)]


# ----------------------------------------------------------------------------- history
def history_section(history: Any) -> Section | None:
    """Loss and AUC per validation, or None when the run recorded no history."""
    entries = [h for h in history or [] if isinstance(h, Mapping)]
    if not entries:
        return None
    epochs = [h.get("epoch") for h in entries]
    by_epoch = len(set(epochs)) == len(epochs)
    x_label = "epoch" if by_epoch else "step"
    x = np.array([h.get(x_label, i + 1) for i, h in enumerate(entries)], dtype=np.float64)
    train_loss = _column(entries, lambda h: h.get("train_loss"))
    valid_logloss = _column(entries, lambda h: (h.get("metrics") or {}).get("logloss"))
    valid_auc = _column(entries, lambda h: (h.get("metrics") or {}).get("auc"))
    figure = plots.history_figure(x, x_label, train_loss, valid_logloss, valid_auc)
    header = ["epoch", "step", "learning rate", "train loss", "valid AUC", "valid logloss", "best"]
    rows = [
        [
            fmt(h.get("epoch")),
            fmt(h.get("step")),
            _rate(h.get("learning_rate")),
            fmt(train_loss[i]),
            fmt(valid_auc[i]),
            fmt(valid_logloss[i]),
            "yes" if h.get("improved") else "",
        ]
        for i, h in enumerate(entries)
    ]
    image = _image(figure, "training history: loss and AUC per " + x_label)
    return Section("Training history", [], [Table(header, rows)], [image])


def _rate(value: Any) -> str:
    return f"{value:.0e}" if isinstance(value, int | float) else "n/a"


def _column(
    entries: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], Any]
) -> np.ndarray:
    values = [get(h) for h in entries]
    return np.array([v if isinstance(v, int | float) else np.nan for v in values], dtype=float)


# ----------------------------------------------------------------------------- test curves
def test_section(
    labels: np.ndarray, probs: np.ndarray, calibrated: bool = False, task: str | None = None
) -> Section:
    """ROC and precision-recall (when both classes occur), reliability, score histograms of
    one task's labelled test rows (``task``: its name, when there are several)."""
    scores = "calibrated probabilities" if calibrated else "model probabilities"
    rate = float(np.mean(labels == 1))
    images, notes = [], [f"{len(labels):,} test rows, {rate:.2%} positive; {scores}."]
    if (labels == 1).any() and (labels == 0).any():
        fpr, tpr, _ = curves.roc_curve(labels, probs)
        auc = float(np.trapezoid(tpr, fpr))
        images.append(_image(plots.roc_figure(fpr, tpr, auc), "ROC curve on the test split"))
        precision, recall, _ = curves.precision_recall_curve(labels, probs)
        ap = curves.average_precision(labels, probs)
        figure = plots.precision_recall_figure(precision, recall, ap, float(np.mean(labels == 1)))
        images.append(_image(figure, "precision-recall curve on the test split"))
    else:
        notes.append("The test split holds one class only: no ROC or precision-recall curve.")
    bins = curves.reliability(labels, probs)
    caption = (
        f"ECE = sum over {len(bins.counts)} equal-width bins of (bin rows / N) x "
        "|mean prediction - fraction of positives|."
    )
    images.append(_image(plots.reliability_figure(bins), "reliability diagram", caption))
    figure = plots.score_histogram_figure(probs, labels)
    images.append(_image(figure, "predicted probability histograms by label"))
    return Section("Test split" if task is None else f"Test split: {task}", notes, [], images)


# ----------------------------------------------------------------------------- valid split
def gates_section(
    field_names: Sequence[str], gates: Mapping[str, np.ndarray], num_rows: int
) -> Section | None:
    """Mean gate value per field and stream, or None for a model without gates."""
    if not gates:
        return None
    header = ["field", *gates]
    rows = [
        [name, *(fmt(float(values[i])) for values in gates.values())]
        for i, name in enumerate(field_names)
    ]
    note = (
        f"Mean over {num_rows:,} validation rows and each field's embedding columns of the "
        "stream's gate 2 sigmoid(MLP(context)): 1 is neutral, above 1 the stream amplifies the "
        "field, below 1 it suppresses it (FinalMLP, Sec. 3.1)."
    )
    image = _image(plots.gates_figure(field_names, gates), "mean gate value per field and stream")
    return Section("Feature gates", [note], [Table(header, rows)], [image])


def importance_section(
    layout: FieldLayout, importances: Sequence[FieldImportance], num_rows: int, seed: int
) -> Section:
    """Permutation importance per field, most important first."""
    kinds = {name: "categorical" for name in layout.categorical_fields}
    kinds |= {name: "numeric" for name in layout.numeric_fields}
    kinds |= {name: "sequence" for name in layout.sequence_fields}
    ranked = sorted(importances, key=lambda item: item.auc_drop, reverse=True)
    rows = [
        [item.field, kinds[item.field], fmt(item.auc_drop, 5), fmt(item.logloss_increase, 5)]
        for item in ranked
    ]
    note = (
        f"Each field's column permuted across {num_rows:,} validation rows (seed {seed}; a "
        "sequence field moves whole rows): the drop in AUC and rise in logloss. 0 means the "
        "model does not use the field."
    )
    drops = np.array([item.auc_drop for item in importances])
    figure = plots.importance_figure([item.field for item in importances], drops)
    table = Table(["field", "type", "AUC drop", "logloss increase"], rows)
    return Section("Permutation importance", [note], [table], [_image(figure, "importance")])


# ----------------------------------------------------------------------------- experts
def experts_section(stats: Mapping[str, Any] | None, tasks: Sequence[str]) -> Section | None:
    """Per task the mean gate weight of each expert, and each expert's fraction of dead
    (exactly 0) output activations and output scale: the expert-collapse signals HoME is
    about. None for a model without experts."""
    if not stats:
        return None
    experts, weights = list(stats["experts"]), np.asarray(stats["gate_weights"], dtype=float)
    header = ["expert", "level", "dead fraction", "mean |output|", *tasks]
    rows = [
        [
            name,
            str(stats["levels"][i]),
            fmt(stats["dead_fraction"][i]),
            fmt(stats["mean_abs"][i]),
            *(fmt(float(weights[t, i])) for t in range(len(tasks))),
        ]
        for i, name in enumerate(experts)
    ]
    note = (
        f"Over {stats['rows']:,} validation rows in eval mode. Gate weight: the mean softmax "
        "weight the task's gate gives the expert (0 where the hierarchy mask hides it; a "
        "task's weights at one level sum to 1). Dead fraction: the share of the expert's "
        "output values that are exactly 0 (dead ReLU units; HoME's normalised Swish experts "
        "have next to none). Mean |output|: the scale the gates mix; very different scales "
        "across experts are the expert-collapse signal."
    )
    image = _image(plots.expert_gates_figure(experts, tasks, weights), "gate weight per expert")
    return Section("Experts", [note], [Table(header, rows)], [image])
