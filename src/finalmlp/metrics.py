"""Evaluation metrics for binary CTR prediction, per task, in plain NumPy.

The one place AUC, logloss, group AUC and ECE are computed: training, evaluation, calibration,
serving's A/B report and the run report all use these (this module imports nothing of theirs).

AUC is the Mann-Whitney U statistic computed from tie-averaged ranks (identical to the area
under the trapezoidal ROC curve), and group AUC ranks every group at once after one sort by
(group, score), so millions of groups cost one sort. ECE uses 15 equal-width bins (Guo et al.
2017, "On Calibration of Modern Neural Networks").

Several tasks: labels and probabilities are (N, T) with NaN labels where a row has no label for
that task; :func:`task_metrics` scores each task over its labelled rows and names the values
``<task>.auc``... (one task: plain ``auc``...).

Example:
    >>> compute_metrics(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.6]))
    {'auc': 1.0, 'logloss': 0.2797765635793423}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DEFAULT_BINS",
    "Reliability",
    "as_task_matrix",
    "compute_metrics",
    "expected_calibration_error",
    "flat_binary",
    "group_auc",
    "log_loss",
    "metric_rows",
    "reliability",
    "roc_auc",
    "task_metrics",
]

DEFAULT_BINS = 15  # Guo et al. 2017 use 15 equal-width bins for the ECE


def _as_binary_labels(labels: np.ndarray) -> np.ndarray:
    """Return ``labels`` as a bool array (True = positive); raise unless every value is 0 or 1."""
    values = np.asarray(labels)
    if values.ndim != 1:
        raise ValueError(f"labels must be a 1-d array, got shape {values.shape}")
    if values.dtype == np.bool_:
        return values
    is_positive = values == 1
    if not (is_positive | (values == 0)).all():
        bad = values[~(is_positive | (values == 0))][:3].tolist()
        raise ValueError(f"labels must be 0 or 1, got values such as {bad}")
    return is_positive


def _as_scores(scores: np.ndarray, num_rows: int, what: str = "scores") -> np.ndarray:
    """Return ``scores`` as a finite float64 1-d array of length ``num_rows``."""
    values = np.asarray(scores, dtype=np.float64)
    if values.shape != (num_rows,):
        raise ValueError(f"{what} must have shape ({num_rows},) like labels, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} must be finite, got NaN or inf")
    return values


def _tie_averaged_ranks(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """1-based ranks of already sorted rows, rows equal in every key sharing their mean rank.

    Args:
        sorted_keys: arrays of equal length, jointly sorted; a new tie run starts wherever any
            key changes.
    """
    num_rows = len(sorted_keys[0])
    starts_run = np.zeros(num_rows, dtype=bool)
    starts_run[0] = True
    for key in sorted_keys:
        starts_run[1:] |= key[1:] != key[:-1]
    run_starts = np.flatnonzero(starts_run)
    run_ends = np.append(run_starts[1:], num_rows)  # exclusive
    mean_rank = (run_starts + run_ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    return np.repeat(mean_rank, run_ends - run_starts)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, with tied scores counted as half a correct ordering.

    Args:
        labels: ``[N]`` 0/1 (or bool) targets.
        scores: ``[N]`` predicted scores or probabilities; only their order matters.

    Returns:
        The AUC in [0, 1], or ``nan`` when only one class is present.
    """
    is_positive = _as_binary_labels(labels)
    values = _as_scores(scores, len(is_positive))
    num_pos = int(is_positive.sum())
    num_neg = len(is_positive) - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    ranks = _tie_averaged_ranks([values[order]])
    rank_sum = ranks[is_positive[order]].sum()
    # Mann-Whitney: U = R_pos - n_pos (n_pos + 1) / 2, AUC = U / (n_pos n_neg)
    return float((rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy, with probabilities clipped to ``[eps, 1 - eps]``.

    Args:
        labels: ``[N]`` 0/1 (or bool) targets.
        probs: ``[N]`` predicted probabilities of the positive class.
        eps: clipping bound that keeps ``log`` finite for confident mistakes.
    """
    is_positive = _as_binary_labels(labels)
    if len(is_positive) == 0:
        raise ValueError("log_loss needs at least one row, got none")
    clipped = np.clip(_as_scores(probs, len(is_positive), "probs"), eps, 1.0 - eps)
    return float(-np.where(is_positive, np.log(clipped), np.log1p(-clipped)).mean())


def group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: the AUC within each group (e.g. user), averaged with weights = group rows.

    Groups holding a single class are skipped. Computed with one sort by (group, score), so the
    cost does not depend on the number of groups.

    Args:
        labels: ``[N]`` 0/1 (or bool) targets.
        scores: ``[N]`` predicted scores.
        groups: ``[N]`` group keys of any sortable dtype (ints, strings).

    Returns:
        ``sum_g n_g AUC_g / sum_g n_g`` over groups with both classes, or ``nan`` if none has.
    """
    is_positive = _as_binary_labels(labels)
    values = _as_scores(scores, len(is_positive))
    keys = np.asarray(groups)
    if keys.shape != values.shape:
        raise ValueError(f"groups must have shape {values.shape} like labels, got {keys.shape}")
    if len(keys) == 0:
        return float("nan")
    _, group_codes = np.unique(keys, return_inverse=True)
    group_codes = group_codes.reshape(-1)
    order = np.lexsort((values, group_codes))
    sorted_groups, sorted_positive = group_codes[order], is_positive[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    group_sizes = np.diff(np.append(group_starts, len(keys)))
    # rank within the group = global rank - rows of the groups before it
    ranks = _tie_averaged_ranks([sorted_groups, values[order]])
    ranks -= np.repeat(group_starts, group_sizes)
    num_pos = np.add.reduceat(sorted_positive.astype(np.float64), group_starts)
    rank_sums = np.add.reduceat(np.where(sorted_positive, ranks, 0.0), group_starts)
    num_neg = group_sizes - num_pos
    both = (num_pos > 0) & (num_neg > 0)
    if not both.any():
        return float("nan")
    aucs = (rank_sums[both] - num_pos[both] * (num_pos[both] + 1) / 2.0) / (
        num_pos[both] * num_neg[both]
    )
    weights = group_sizes[both]
    return float((aucs * weights).sum() / weights.sum())


def compute_metrics(
    labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None = None
) -> dict[str, float]:
    """AUC and log loss, plus group AUC when ``groups`` is given.

    Returns:
        ``{"auc": ..., "logloss": ...}`` and ``"gauc"`` if ``groups`` is not None.
    """
    metrics = {"auc": roc_auc(labels, probs), "logloss": log_loss(labels, probs)}
    if groups is not None:
        metrics["gauc"] = group_auc(labels, probs, groups)
    return metrics


# ----------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Reliability:
    """Equal-width bins over [0, 1] of predicted probabilities.

    Attributes:
        edges: (K+1,) bin edges, 0 to 1; bin k holds ``edges[k] < p <= edges[k+1]`` (0 goes to
            the first bin).
        counts: (K,) rows per bin.
        mean_pred: (K,) mean predicted probability per bin (nan where empty).
        frac_pos: (K,) fraction of positives per bin (nan where empty).
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_pred: np.ndarray
    frac_pos: np.ndarray

    @property
    def ece(self) -> float:
        """``sum_k (n_k / N) |mean_pred_k - frac_pos_k|`` over non-empty bins."""
        filled = self.counts > 0
        weights = self.counts[filled] / self.counts.sum()
        gaps = np.abs(self.mean_pred[filled] - self.frac_pos[filled])
        return float((weights * gaps).sum())


def flat_binary(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as booleans (1 is positive) and scores as float64, both flattened (curves).

    Raises:
        ValueError: they are empty or of different lengths.
    """
    is_positive = np.asarray(labels).reshape(-1) == 1
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(is_positive) != len(values) or len(values) == 0:
        raise ValueError(
            f"labels and scores must be non-empty and of equal length, got {len(is_positive)} "
            f"and {len(values)}"
        )
    return is_positive, values


def reliability(labels: np.ndarray, probs: np.ndarray, num_bins: int = DEFAULT_BINS) -> Reliability:
    """Bin predicted probabilities into ``num_bins`` equal-width bins over [0, 1].

    Args:
        labels: (N,) 0/1 targets.
        probs: (N,) predicted probabilities of the positive class.
        num_bins: K, the number of bins.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be at least 1, got {num_bins}")
    is_positive, values = flat_binary(labels, probs)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.searchsorted(edges[1:-1], values, side="left")  # (lo, hi], as scikit-learn
    counts = np.bincount(bins, minlength=num_bins).astype(np.float64)
    pred_sums = np.bincount(bins, weights=values, minlength=num_bins)
    pos_sums = np.bincount(bins, weights=is_positive.astype(np.float64), minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred, frac_pos = pred_sums / counts, pos_sums / counts
    return Reliability(edges, counts.astype(np.int64), mean_pred, frac_pos)


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, num_bins: int = DEFAULT_BINS
) -> float:
    """ECE: ``sum_k (n_k / N) |mean predicted probability_k - fraction of positives_k|``.

    Bins are ``num_bins`` equal-width intervals of [0, 1] (see :class:`Reliability`); 0 means
    the predicted probabilities match the observed click rates in every bin.
    """
    return reliability(labels, probs, num_bins).ece


# ----------------------------------------------------------------------------- tasks
def as_task_matrix(values: np.ndarray, name: str = "labels") -> np.ndarray:
    """(N,) or (N, T) -> (N, T) float64 (a 1-d array is one task)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        return array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, T), got shape {array.shape}")
    return array


def task_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    task_names: Sequence[str],
    groups: np.ndarray | None = None,
) -> dict[str, float]:
    """AUC, logloss (and group AUC) of every task over its labelled rows.

    Args:
        labels: (N, T) 0/1 with NaN where the row has no label for that task ((N,): one task).
        probs: (N, T) probabilities.
        task_names: the T task names.
        groups: (N,) group keys, or None.

    Returns:
        One task: ``{"auc", "logloss"[, "gauc"]}``. Several: ``"<task>.auc"``... for each task,
        and the plain names holding the mean over tasks (``"auc"`` is the mean AUC).
    """
    label_matrix = as_task_matrix(labels)
    prob_matrix = as_task_matrix(probs, "probs")
    if label_matrix.shape != prob_matrix.shape or label_matrix.shape[1] != len(task_names):
        raise ValueError(
            f"labels {label_matrix.shape} and probs {prob_matrix.shape} must both be "
            f"(N, {len(task_names)}) for tasks {list(task_names)}"
        )
    per_task = []
    for t in range(label_matrix.shape[1]):
        known = ~np.isnan(label_matrix[:, t])
        group = None if groups is None else np.asarray(groups)[known]
        if not known.any():
            nan = float("nan")
            per_task.append(
                {"auc": nan, "logloss": nan, **({} if group is None else {"gauc": nan})}
            )
            continue
        per_task.append(compute_metrics(label_matrix[known, t], prob_matrix[known, t], group))
    if len(per_task) == 1:
        return per_task[0]
    out: dict[str, float] = {}
    for name, values in zip(task_names, per_task, strict=True):
        out.update({f"{name}.{metric}": value for metric, value in values.items()})
    for metric in per_task[0]:
        out[metric] = float(np.mean([values[metric] for values in per_task]))
    return out


def metric_rows(metrics: dict[str, float]) -> list[tuple[str | None, dict[str, float]]]:
    """:func:`task_metrics`' result as one (task, {metric: value}) per task, in order; a
    one-task result is one row with task None."""
    tasks = list(dict.fromkeys(k.rpartition(".")[0] for k in metrics if "." in k))
    if not tasks:
        return [(None, dict(metrics))]
    return [
        (
            task,
            {k.rpartition(".")[2]: v for k, v in metrics.items() if k.rpartition(".")[0] == task},
        )
        for task in tasks
    ]
