"""The search report: parameter importance, best-so-far curve (PNGs) and tune_report.html.

Figures are plain matplotlib (Agg, no pyplot), like the run report's. Importance is Optuna's
PED-ANOVA over the complete trials: deterministic, and unlike fANOVA it needs no scikit-learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from matplotlib.figure import Figure

from finalmlp.io import atomic_write_bytes, atomic_write_text
from finalmlp.report.html import Image, Section, Table, render_html
from finalmlp.report.plots import new_figure, png_bytes
from finalmlp.tune.results import TrialRow
from finalmlp.tune.space import value_text

IMPORTANCE_PNG = "importance.png"
HISTORY_PNG = "best_so_far.png"
REPORT_HTML = "tune_report.html"


def param_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """PED-ANOVA importances (summing to 1), or an empty dict and the reason there are none."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}, f"parameter importance needs 2 or more complete trials ({len(complete)} so far)"
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:
        return {}, f"parameter importance unavailable: {exc}"
    if not importances:
        return {}, "parameter importance unavailable: no parameter varied across complete trials"
    return dict(importances), ""


def importance_figure(importances: dict[str, float]) -> Figure:
    names = list(importances)[::-1]  # most important on top
    label_inches = 0.3 + 0.08 * max(len(name) for name in names)  # room for dotted keys
    figure = new_figure(4.5 + label_inches, 0.45 * len(names) + 1.2, left=label_inches)
    axes = figure.add_subplot()
    axes.barh(names, [importances[n] for n in names], color="#1f77b4")
    axes.set_xlabel("importance (PED-ANOVA: how much the top trials' values differ)")
    axes.set_title("Parameter importance")
    axes.grid(alpha=0.3, axis="x")
    return figure


def history_figure(rows: list[TrialRow], metric: str, maximize: bool) -> Figure:
    """Each complete trial's value, pruned trials at their last report, the running best, and
    the default (the base config's trial) as a dashed line."""
    figure = new_figure(7.0, 4.0)
    axes = figure.add_subplot()
    done = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
    if done:
        numbers = np.array([r.number for r in done])
        values = np.array([float(r.value or 0.0) for r in done])
        best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
        axes.scatter(numbers, values, color="#1f77b4", label="complete", zorder=3)
        last_trial = max(r.number for r in rows)  # the best holds through later pruned trials
        axes.step(
            np.append(numbers, last_trial),
            np.append(best, best[-1]),
            where="post",
            color="#d62728",
            label="best so far",
        )
    pruned = [r for r in rows if r.state == "PRUNED" and r.last_report is not None]
    if pruned:
        last = [float(r.last_report or 0.0) for r in pruned]
        axes.scatter(
            [r.number for r in pruned], last, marker="x", color="#7f7f7f", label="pruned (last)"
        )
    default = next((r for r in done if r.default), None)
    if default is not None:
        axes.axhline(
            float(default.value or 0.0),
            color="#2ca02c",
            linestyle="--",
            label=f"default (trial {default.number})",
        )
    axes.set_xlabel("trial")
    axes.set_ylabel(f"valid {metric}")
    axes.set_title("Search history")
    axes.grid(alpha=0.3)
    if done or pruned:
        axes.legend(loc="best", fontsize="small")
    return figure


def write_report(
    out_dir: Path,
    study: optuna.Study,
    rows: list[TrialRow],
    chosen: tuple[TrialRow | None, TrialRow | None],
    metric: str,
) -> tuple[list[Path], list[str]]:
    """Write the PNGs and tune_report.html; returns the files written and notes."""
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    importances, note = param_importances(study)
    images = [Image(png_bytes(history_figure(rows, metric, maximize)), "best so far")]
    files = [out_dir / HISTORY_PNG]
    atomic_write_bytes(files[0], images[0].png)
    if importances:
        images.append(Image(png_bytes(importance_figure(importances)), "parameter importance"))
        files.append(out_dir / IMPORTANCE_PNG)
        atomic_write_bytes(files[-1], images[-1].png)
    sections = [
        Section("Default and best", tables=[_summary_table(*chosen, metric)]),
        Section("Figures", notes=[note] if note else [], images=images),
        Section("Trials", tables=[_trials_table(rows)]),
    ]
    html = render_html(f"Search {study.study_name}", sections, f"validation {metric}")
    files.append(out_dir / REPORT_HTML)
    atomic_write_text(files[-1], html)
    return files, [note] if note else []


def _summary_table(default: TrialRow | None, best: TrialRow | None, metric: str) -> Table:
    """Default and best: trial, value, and each parameter."""
    shown = best or default
    keys = list(shown.params) if shown is not None else []
    header = ["", "trial", f"valid {metric}", f"test {metric}", *keys]
    table = [
        [label, str(row.number), _num(row.value), _num(row.test.get(metric))]
        + [value_text(row.params.get(k)) for k in keys]
        for label, row in (("default", default), ("best", best))
        if row is not None
    ]
    return Table(header, table)


def _trials_table(rows: list[TrialRow]) -> Table:
    keys = list(dict.fromkeys(key for row in rows for key in row.params))
    header = ["trial", "state", "value", "epochs", "seconds", *keys, "note"]
    body = [
        [str(r.number), r.state, _num(r.value), str(r.epochs or ""), _num(r.seconds, ".0f")]
        + [value_text(r.params.get(k)) for k in keys]
        + [("default; " if r.default else "") + r.note]
        for r in rows
    ]
    return Table(header, body)


def _num(value: float | None, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)
