"""Are a run's probabilities usable as probabilities? The check at the end of every training.

In ads and ranking the probability itself is used (bids, thresholds, blending), so a model
whose validation logloss is worse than predicting the training click rate for every row, or
whose probabilities are far from the observed click rates (a high ECE), is a wrong answer even
when its AUC is fine. The check compares, per task, on the validation split and with the
scores the run serves (through its calibration when it has one):

- ``logloss`` against ``base_rate_logloss``, the logloss of the constant prediction ``p`` (the
  training split's positive rate);
- ``ece`` (15 equal-width bins) against ``ece_limit = clip(0.5 * min(p, 1 - p), 0.01, 0.05)``:
  a gap of half the click rate itself on a rare-click set, at most 0.05.

The result goes into ``metrics.json`` as ``probability_check`` (``flagged`` true when any task
fails); ``finalmlp train`` prints a warning line for each failure after its summary, and
:func:`finalmlp.train` issues a :class:`ProbabilityWarning`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from finalmlp.data.split import LabelCounts, as_label_matrix
from finalmlp.metrics import as_task_matrix, expected_calibration_error, log_loss

ECE_MIN_LIMIT = 0.01
ECE_MAX_LIMIT = 0.05
ECE_RATE_SHARE = 0.5
EPS = 1e-7  # as finalmlp.metrics.log_loss clips


class ProbabilityWarning(UserWarning):
    """A trained run's probabilities are worse than the base rate, or badly calibrated."""


def base_rate_logloss(labels: np.ndarray, rate: float) -> float:
    """Logloss of predicting ``rate`` for every row of ``labels`` (0/1)."""
    p = float(np.clip(rate, EPS, 1 - EPS))
    positives = float(np.mean(labels))
    return float(-(positives * np.log(p) + (1 - positives) * np.log(1 - p)))


def split_base_rate_logloss(
    counts: LabelCounts | None, labels: np.ndarray | None
) -> list[float] | None:
    """Per task: the logloss on ``labels`` (N, T; NaN: unlabelled) of predicting the positive
    rate of ``counts`` (the training split's); None without counts or labels."""
    matrix = as_label_matrix(labels)
    if counts is None or matrix is None:
        return None
    out = []
    for t, (labelled, positives) in enumerate(zip(counts.labelled, counts.positives, strict=True)):
        known = matrix[~np.isnan(matrix[:, t]), t]
        out.append(base_rate_logloss(known, positives / max(labelled, 1)) if len(known) else 0.0)
    return out


def ece_limit(rate: float) -> float:
    """The ECE above which a run is flagged, for a click rate ``rate``."""
    return float(np.clip(ECE_RATE_SHARE * min(rate, 1 - rate), ECE_MIN_LIMIT, ECE_MAX_LIMIT))


def probability_check(
    labels: np.ndarray,
    probs: np.ndarray,
    train_rates: Sequence[float],
    tasks: Sequence[str],
    scores: str = "model",
) -> dict[str, Any]:
    """The check of ``probs`` (N, T) against ``labels`` (N, T; NaN: unlabelled), per task.

    Args:
        labels: validation labels.
        probs: the probabilities the run serves for those rows.
        train_rates: each task's positive rate on the training split (the base rate).
        tasks: the task names.
        scores: which scores were checked (``model`` or the calibration method), for the record.

    Returns:
        ``{"flagged": bool, "split": "valid", "scores": ..., "tasks": {name: {...}}}`` with
        base_rate, logloss, base_rate_logloss, ece, ece_limit, worse_than_base_rate and
        high_ece for each task.
    """
    label_matrix, prob_matrix = as_task_matrix(labels), as_task_matrix(probs, "probs")
    out: dict[str, Any] = {"flagged": False, "split": "valid", "scores": scores, "tasks": {}}
    for t, name in enumerate(tasks):
        known = ~np.isnan(label_matrix[:, t])
        if not known.any():
            continue
        y, p = label_matrix[known, t], prob_matrix[known, t]
        rate = float(train_rates[t])
        logloss = log_loss(y, p)
        base = base_rate_logloss(y, rate)
        ece = expected_calibration_error(y, p)
        limit = ece_limit(rate)
        entry = {
            "base_rate": rate,
            "logloss": logloss,
            "base_rate_logloss": base,
            "ece": ece,
            "ece_limit": limit,
            "worse_than_base_rate": bool(logloss >= base),
            "high_ece": bool(ece > limit),
        }
        out["tasks"][name] = entry
        out["flagged"] |= entry["worse_than_base_rate"] or entry["high_ece"]
    return out


def probability_problems(metrics: dict[str, Any]) -> list[str]:
    """One warning line per failed check in ``metrics["probability_check"]`` (none: [])."""
    check = metrics.get("probability_check")
    if not check or not check.get("flagged"):
        return []
    lines = []
    several = len(check["tasks"]) > 1
    if check.get("scores", "model") == "model":
        fix = "set train.calibration: platt (fitted on the validation split)"
    else:
        fix = (
            "the model learned little: try a smaller train.batch_size (more steps per epoch), "
            "more training rows, or `finalmlp tune`"
        )
    for name, entry in check["tasks"].items():
        task = f" (task {name})" if several else ""
        if entry["worse_than_base_rate"]:
            lines.append(
                f"validation logloss {entry['logloss']:.4f}{task} is no better than predicting "
                f"the base rate {entry['base_rate']:.4g} for every row "
                f"({entry['base_rate_logloss']:.4f}): these probabilities must not be used as "
                f"click rates; {fix}"
            )
        if entry["high_ece"]:
            lines.append(
                f"validation ECE {entry['ece']:.4f}{task} is above {entry['ece_limit']:.4f}: "
                f"predicted probabilities are far from the observed click rates; {fix}"
            )
    return lines
