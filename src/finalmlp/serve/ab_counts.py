"""What the A/B log counts per arm and task, and the report made of it (pure logic).

An arm's counts hold, per task, the predictions that got an outcome and those outcomes. A
one-task model's impressions are under the task ``None`` and report flat, as they always have
(``feedback``, ``clicks``, ``ctr``, ``mean_predicted_ctr``, ``auc``); a model of several tasks
reports the same fields per task under ``tasks``. Also here: the checks of logged and posted
outcomes and of log lines. A prediction that is not a finite number (an
old log written before scores were checked) is left out of the mean and the AUC and counted as
``unscored``, so the report never fails on it.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finalmlp.errors import FinalMLPError
from finalmlp.metrics import roc_auc
from finalmlp.serve.scorer import show


class FeedbackError(FinalMLPError, ValueError):
    """Feedback that cannot be recorded (the HTTP service answers 422)."""


class UnknownRequestError(FeedbackError):
    """Feedback for a request id that was never scored, or whose wait expired (HTTP 404)."""


@dataclass
class TaskCounts:
    """Predictions with feedback and their 0/1 outcomes, for one task of one arm."""

    predictions: array[float] = field(default_factory=lambda: array("d"))
    outcomes: array[int] = field(default_factory=lambda: array("b"))

    def add(self, prediction: float, outcome: int) -> None:
        self.predictions.append(prediction)
        self.outcomes.append(outcome)


@dataclass
class ArmCounts:
    requests: int = 0
    impressions: int = 0
    tasks: dict[str | None, TaskCounts] = field(default_factory=dict)  # None: one-task model

    def task(self, name: str | None) -> TaskCounts:
        counts = self.tasks.get(name)
        if counts is None:
            counts = self.tasks[name] = TaskCounts()
        return counts


def arm_summary(counts: ArmCounts, tasks: Sequence[str] = ()) -> dict[str, Any]:
    """An arm's report: counts, then the one-task fields, or ``tasks`` (each of ``tasks`` is
    listed even before it has feedback)."""
    summary: dict[str, Any] = {"requests": counts.requests, "impressions": counts.impressions}
    named = [*tasks, *(n for n in counts.tasks if n is not None and n not in tasks)]
    if None in counts.tasks or not named:
        summary.update(task_summary(counts.tasks.get(None, TaskCounts())))
    if named:
        summary["tasks"] = {n: task_summary(counts.tasks.get(n, TaskCounts())) for n in named}
    return summary


def task_summary(counts: TaskCounts) -> dict[str, Any]:
    labelled = len(counts.outcomes)
    outcomes = np.frombuffer(counts.outcomes, dtype=np.int8).copy()  # no view: arrays grow
    predictions = np.frombuffer(counts.predictions, dtype=np.float64).copy()
    clicks = int(outcomes.sum(dtype=np.int64))
    finite = np.isfinite(predictions)
    scored = int(finite.sum())
    auc = None
    if scored:
        try:
            auc = roc_auc(outcomes[finite], predictions[finite])
        except ValueError:  # never fail the report
            auc = None
    summary: dict[str, Any] = {
        "feedback": labelled,
        "clicks": clicks,
        "ctr": clicks / labelled if labelled else None,
        "mean_predicted_ctr": float(predictions[finite].mean()) if scored else None,
        "auc": auc if auc is not None and math.isfinite(auc) else None,
    }
    if scored < labelled:
        summary["unscored"] = labelled - scored  # feedback on a NaN/inf prediction: left out
    return summary


def add_vs_control(arms: Mapping[str, dict[str, Any]], names: Sequence[str]) -> None:
    """Each arm after the first gets ``vs_control``: its CTR against the first arm's, for the
    one-task fields and for each task both arms have."""
    if not names:
        return
    control = arms[names[0]]
    for name in names[1:]:
        arm = arms[name]
        if "feedback" in arm and "feedback" in control:
            arm["vs_control"] = _vs(control, arm, names[0])
        for task, summary in arm.get("tasks", {}).items():
            if task in control.get("tasks", {}):
                summary["vs_control"] = _vs(control["tasks"][task], summary, names[0])


def _vs(control: dict[str, Any], arm: dict[str, Any], name: str) -> dict[str, Any]:
    z, p = two_proportion_test(
        control["clicks"], control["feedback"], arm["clicks"], arm["feedback"]
    )
    return {"control": name, "z": z, "p_value": p}


def two_proportion_test(
    clicks_a: int, n_a: int, clicks_b: int, n_b: int
) -> tuple[float | None, float | None]:
    """Pooled two-proportion z-test of CTR_b - CTR_a: ``(z, two-sided p)``, None when undefined.

    ``z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b))`` with the pooled ``p``, and
    ``p-value = erfc(|z| / sqrt(2))``.
    """
    if n_a == 0 or n_b == 0:
        return None, None
    pooled = (clicks_a + clicks_b) / (n_a + n_b)
    variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if variance <= 0.0:
        return None, None
    z = (clicks_b / n_b - clicks_a / n_a) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2.0))


# ----------------------------------------------------------------------------- records
def check_outcomes(request_id: str, values: list[Any], tasks: tuple[str, ...] | None) -> list[Any]:
    """The outcomes as logged: 0/1 numbers (one task) or ``{task: 0, 1 or None}`` with every
    task of the request (several); FeedbackError naming what is wrong."""
    if tasks is None:
        if not all(_is_outcome(v) for v in values):
            raise FeedbackError(f"outcomes must be 0 or 1, got {show(values)}")
        return [int(v) for v in values]
    example = json.dumps(dict.fromkeys(tasks, 1))
    normalized = []
    for index, value in enumerate(values):
        if not isinstance(value, Mapping):
            raise FeedbackError(
                f"outcomes.{index}: request {request_id!r} was scored for the tasks "
                f"{list(tasks)}; send one object per record, e.g. {example} (a task left out "
                f"or null: not observed), got {show(value)}"
            )
        unknown = [k for k in value if k not in tasks]
        if unknown:
            raise FeedbackError(
                f"outcomes.{index}: unknown task {show(unknown[0])}; the tasks are {list(tasks)}"
            )
        if not all(v is None or _is_outcome(v) for v in value.values()):
            raise FeedbackError(f"outcomes.{index}: each task's outcome must be 0, 1 or null")
        normalized.append({t: None if value.get(t) is None else int(value[t]) for t in tasks})
    return normalized


def json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def from_json(value: Any) -> float:
    return math.nan if value is None else float(value)


def parse_line(line: bytes) -> dict[str, Any] | None:
    """A log record, or None for a line that is not one (torn, edited, another file)."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("request_id"), str):
        return None
    kind, values = record.get("type"), record.get("predictions")
    if kind == "impressions" and isinstance(record.get("arm"), str) and isinstance(values, list):
        tasks = record.get("tasks")
        if tasks is None:
            return record if all(v is None or _is_number(v) for v in values) else None
        if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) for t in tasks)):
            return None
        rows_ok = all(
            isinstance(row, dict) and all(row.get(t) is None or _is_number(row[t]) for t in tasks)
            for row in values
        )
        return record if rows_ok else None
    if kind == "feedback" and isinstance(record.get("outcomes"), list):
        return record  # checked against its request's tasks when replayed
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_outcome(value: Any) -> bool:
    return _is_number(value) and value in (0, 1)
