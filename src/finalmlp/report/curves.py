"""ROC, precision-recall and reliability curves, and expected calibration error, in NumPy.

The curves follow scikit-learn's conventions (``roc_curve(drop_intermediate=False)``,
``precision_recall_curve``, ``calibration_curve(strategy="uniform")``) so they can be checked
against it, without depending on it at run time.

Example:
    >>> expected_calibration_error(np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9]), 2)
    0.25
"""

from __future__ import annotations

import numpy as np

from finalmlp.metrics import (  # re-exported: the report's curves and calibration in one place
    DEFAULT_BINS,
    Reliability,
    expected_calibration_error,
    flat_binary,
    reliability,
)

__all__ = [
    "DEFAULT_BINS",
    "Reliability",
    "average_precision",
    "expected_calibration_error",
    "precision_recall_curve",
    "reliability",
    "roc_curve",
]


def _cumulative_counts(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, highest score first."""
    is_positive, values = flat_binary(labels, scores)
    order = np.argsort(-values, kind="stable")
    sorted_scores, sorted_positive = values[order], is_positive[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(values) - 1]
    true_pos = np.cumsum(sorted_positive)[last_of_run].astype(np.float64)
    false_pos = (last_of_run + 1) - true_pos
    return true_pos, false_pos, sorted_scores[last_of_run]


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score, from (0, 0) to (1, 1).

    Returns:
        ``(fpr, tpr, thresholds)``, each (T+1,); ``thresholds[0]`` is ``inf``.

    Raises:
        ValueError: only one class present (a rate would divide by zero).
    """
    true_pos, false_pos, thresholds = _cumulative_counts(labels, scores)
    if true_pos[-1] == 0 or false_pos[-1] == 0:
        raise ValueError("a ROC curve needs both classes; the labels hold only one")
    tpr = np.r_[0.0, true_pos / true_pos[-1]]
    fpr = np.r_[0.0, false_pos / false_pos[-1]]
    return fpr, tpr, np.r_[np.inf, thresholds]


def precision_recall_curve(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score, lowest threshold first.

    As scikit-learn: the last point is (recall 0, precision 1), with no threshold.

    Returns:
        ``(precision, recall, thresholds)``; precision and recall (T+1,), thresholds (T,).
    """
    true_pos, false_pos, thresholds = _cumulative_counts(labels, scores)
    if true_pos[-1] == 0:
        raise ValueError("a precision-recall curve needs positives; the labels hold none")
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / true_pos[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """``sum_n (R_n - R_{n-1}) P_n``: the step-wise area under the precision-recall curve."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))
