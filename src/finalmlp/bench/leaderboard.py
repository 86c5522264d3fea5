"""Benchmark tables: per-run CSV, mean +/- std Markdown, and a test-AUC plot with error bars."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from finalmlp.bench.runner import RESULT_COLUMNS
from finalmlp.io import atomic_write, atomic_write_text


def task_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The ``<split>_<task>_<metric>`` columns of multi-task runs, in first-seen order."""
    return list(dict.fromkeys(k for row in rows for k in row if k not in RESULT_COLUMNS))


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: mean and sample std of the metrics over seeds, best test AUC first (with
    several tasks: the mean over tasks; each task's metrics are summarised too)."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row)
    extra = task_columns(rows)
    summary = []
    for model, runs in by_model.items():
        item: dict[str, Any] = {"model": model, "seeds": len(runs)}
        keys = ["test_auc", "test_logloss", "valid_auc", "valid_logloss"]
        for key in keys + [k for k in extra if all(k in r for r in runs)]:
            values = [float(r[key]) for r in runs]
            item[key] = statistics.fmean(values)
            item[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        item["epochs"] = statistics.fmean(float(r["epochs"]) for r in runs)
        item["train_samples_per_s"] = statistics.fmean(
            float(r["train_samples_per_s"]) for r in runs
        )
        item["parameters"] = runs[0]["parameters"]
        summary.append(item)
    return sorted(summary, key=lambda s: -s["test_auc"])


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    columns = [*RESULT_COLUMNS, *task_columns(rows)]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k, "")) for k in columns})
    atomic_write_text(path, buffer.getvalue())


def _csv_value(value: Any) -> Any:
    return f"{value:.6f}" if isinstance(value, float) else value


def markdown(
    summary: list[dict[str, Any]],
    published: dict[str, dict[str, Any]] | None,
    command: str,
    title: str,
) -> str:
    """Our mean +/- std per model; the published figure and our difference beside it."""
    lines = [f"# {title}", "", f"Made by: `{command}`", ""]
    header = "| model | seeds | test AUC | test logloss | valid AUC | epochs | samples/s | params |"
    rule = "|---|---|---|---|---|---|---|---|"
    if published:
        header += " published AUC | published logloss | ours - published AUC |"
        rule += "---|---|---|"
    lines += [header, rule]
    for s in summary:
        line = (
            f"| {s['model']} | {s['seeds']} | {_pm(s, 'test_auc')} | {_pm(s, 'test_logloss')} "
            f"| {_pm(s, 'valid_auc')} | {s['epochs']:.1f} | {s['train_samples_per_s']:,.0f} "
            f"| {s['parameters']:,} |"
        )
        if published:
            line += _published_cells(s, published.get(s["model"]))
        lines.append(line)
    if published:
        sources = sorted({str(p.get("source", "")) for p in published.values()} - {""})
        if sources:
            lines += ["", "Published figures: " + "; ".join(sources) + "."]
    lines += _task_table(summary)
    return "\n".join(lines) + "\n"


def _task_table(summary: list[dict[str, Any]]) -> list[str]:
    """Per model and task: test AUC, test logloss, valid AUC (mean ± std); none for one task."""
    tasks = list(
        dict.fromkeys(
            key[len("test_") : -len("_auc")]
            for s in summary
            for key in s
            if key.startswith("test_") and key.endswith("_auc") and key != "test_auc"
        )
    )
    if not tasks:
        return []
    lines = ["", "Per task (the table above shows the mean over tasks):", ""]
    lines += ["| model | task | test AUC | test logloss | valid AUC |", "|---|---|---|---|---|"]
    for s in summary:
        for task in tasks:
            if f"test_{task}_auc" not in s:
                continue
            cells = [_pm(s, f"test_{task}_auc"), _pm(s, f"test_{task}_logloss")]
            cells.append(_pm(s, f"valid_{task}_auc"))
            lines.append(f"| {s['model']} | {task} | " + " | ".join(cells) + " |")
    return lines


def _pm(summary: dict[str, Any], key: str) -> str:
    return f"{summary[key]:.4f} ± {summary[key + '_std']:.4f}"


def _published_cells(summary: dict[str, Any], ref: dict[str, Any] | None) -> str:
    if ref is None:
        return " - | - | - |"
    logloss = ref.get("logloss")
    logloss_cell = f"{float(logloss):.4f}" if logloss is not None else "-"
    delta = summary["test_auc"] - float(ref["auc"])
    return f" {float(ref['auc']):.4f} | {logloss_cell} | {delta:+.4f} |"


ZOOM_AUC = 0.005  # a second panel zooms on the models this close to the best


def _auc_panel(axes: Any, rows: list[dict[str, Any]], reference: dict[str, dict[str, Any]]) -> None:
    names = [s["model"] for s in rows]
    means = [s["test_auc"] for s in rows]
    stds = [s["test_auc_std"] for s in rows]
    axes.errorbar(means, range(len(names)), xerr=stds, fmt="o", capsize=4, label="ours, mean ± std")
    points = [(i, float(reference[n]["auc"])) for i, n in enumerate(names) if n in reference]
    if points:
        ys, xs = zip(*points, strict=True)
        axes.scatter(xs, ys, marker="x", color="tab:red", label="published", zorder=3)
    axes.set_yticks(range(len(names)), names)
    low = min([m - s for m, s in zip(means, stds, strict=True)] + [p for _, p in points])
    axes.set_xlim(left=math.floor(low * 1000) / 1000)
    axes.set_xlabel("test AUC")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(loc="lower right")


def plot_auc(
    path: Path, summary: list[dict[str, Any]], published: dict[str, dict[str, Any]] | None
) -> None:
    """Horizontal bars of mean test AUC with std error bars; published AUC as markers."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ordered = list(reversed(summary))  # best at the top
    best = ordered[-1]["test_auc"]
    close = [s for s in ordered if s["test_auc"] >= best - ZOOM_AUC]
    panels = [ordered, close] if len(close) < len(ordered) else [ordered]
    height = 0.45 * len(ordered) + 1.5
    figure = Figure(figsize=(7 * len(panels), height), layout="constrained")
    for index, rows in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        _auc_panel(axes, rows, published or {})
        if index:
            axes.set_title(f"within {ZOOM_AUC} of the best")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
