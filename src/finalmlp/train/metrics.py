"""Evaluation metrics for binary CTR prediction, in plain NumPy.

All three metrics are vectorised and O(n log n): AUC is the Mann-Whitney U statistic computed from
tie-averaged ranks (identical to the area under the trapezoidal ROC curve), and group AUC ranks
every group at once after one sort by (group, score), so millions of groups cost one sort.

Example:
    >>> compute_metrics(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.6]))
    {'auc': 1.0, 'logloss': 0.2797765635793423}
"""

from __future__ import annotations

import numpy as np

__all__ = ["compute_metrics", "group_auc", "log_loss", "roc_auc"]


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
