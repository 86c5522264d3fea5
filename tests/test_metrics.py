"""Metrics against scikit-learn and explicit per-group loops."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from finalmlp.metrics import compute_metrics, group_auc, log_loss, roc_auc


def _tied_data(num_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and probabilities rounded to 2 decimals, so scores tie a lot."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(num_rows) < 0.3).astype(np.int64)
    probs = np.clip(rng.random(num_rows) * 0.6 + 0.35 * labels, 0.01, 0.99).round(2)
    return labels, probs


def _loop_group_auc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> float:
    """Reference group AUC: sklearn per group, weighted by rows, single-class groups skipped."""
    total, weight = 0.0, 0
    for group in np.unique(groups):
        mask = groups == group
        if labels[mask].min() == labels[mask].max():
            continue
        total += roc_auc_score(labels[mask], scores[mask]) * mask.sum()
        weight += mask.sum()
    return total / weight if weight else float("nan")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    labels, probs = _tied_data(20_000, seed)
    assert len(np.unique(probs)) < 100  # heavy ties
    assert roc_auc(labels, probs) == pytest.approx(roc_auc_score(labels, probs), abs=1e-9)


def test_roc_auc_accepts_bool_and_float_labels() -> None:
    labels, probs = _tied_data(1_000, 3)
    expected = roc_auc_score(labels, probs)
    assert roc_auc(labels.astype(bool), probs) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(labels.astype(np.float32), probs) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_single_class_is_nan() -> None:
    assert math.isnan(roc_auc(np.zeros(5), np.linspace(0, 1, 5)))
    assert math.isnan(roc_auc(np.ones(5), np.linspace(0, 1, 5)))
    assert math.isnan(roc_auc(np.array([]), np.array([])))


def test_roc_auc_perfect_reversed_and_constant() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = labels * 0.5 + 0.1
    assert roc_auc(labels, scores) == 1.0
    assert roc_auc(labels, -scores) == 0.0
    assert roc_auc(labels, np.full(6, 0.3)) == 0.5


def test_roc_auc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="labels must be 0 or 1, got values such as"):
        roc_auc(np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"scores must have shape \(3,\)"):
        roc_auc(np.array([0, 1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="scores must be finite"):
        roc_auc(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]))
    with pytest.raises(ValueError, match="labels must be a 1-d array"):
        roc_auc(np.zeros((2, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize("seed", [0, 1])
def test_log_loss_matches_sklearn(seed: int) -> None:
    labels, probs = _tied_data(20_000, seed)
    assert log_loss(labels, probs) == pytest.approx(sk_log_loss(labels, probs), abs=1e-9)


def test_log_loss_matches_formula_and_clips() -> None:
    labels = np.array([1, 0, 1, 0])
    probs = np.array([0.8, 0.3, 1.0, 0.0], dtype=np.float32)  # float32: 1 - eps must not round
    eps = 1e-7
    clipped = np.clip(probs.astype(np.float64), eps, 1 - eps)
    expected = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    assert log_loss(labels, probs, eps=eps) == pytest.approx(expected, abs=1e-12)
    assert math.isfinite(log_loss(np.array([1, 0]), np.array([0.0, 1.0])))


def test_log_loss_rejects_empty_and_nan() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        log_loss(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="probs must be finite"):
        log_loss(np.array([0, 1]), np.array([0.5, np.nan]))


@pytest.mark.parametrize("num_groups", [3, 50, 300])
def test_group_auc_matches_loop(num_groups: int) -> None:
    labels, probs = _tied_data(10_000, num_groups)
    groups = np.random.default_rng(num_groups).integers(0, num_groups, len(labels))
    expected = _loop_group_auc(labels, probs, groups)
    assert group_auc(labels, probs, groups) == pytest.approx(expected, abs=1e-9)


def test_group_auc_string_groups_and_skipped_groups() -> None:
    labels = np.array([1, 0, 0, 1, 1, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.1, 0.5, 0.5, 0.2, 0.3, 0.4, 0.4, 0.4, 0.1])
    groups = np.array(["u2", "u2", "u1", "u1", "u3", "u3", "u4", "u4", "u4", "u4"])
    # u2: 1 (2 rows); u1: 1/2, a tie (2 rows); u3 single class: skipped;
    # u4: the positive 0.4 ties two negatives at 0.4 and beats 0.1: (1/2 + 1/2 + 1) / 3 (4 rows)
    expected = (1.0 * 2 + 0.5 * 2 + 2 / 3 * 4) / 8
    assert group_auc(labels, scores, groups) == pytest.approx(expected, abs=1e-12)
    assert group_auc(labels, scores, groups) == pytest.approx(
        _loop_group_auc(labels, scores, groups), abs=1e-12
    )


def test_group_auc_nan_when_no_group_has_both_classes() -> None:
    labels = np.array([1, 1, 0, 0])
    groups = np.array([1, 1, 2, 2])
    assert math.isnan(group_auc(labels, np.array([0.1, 0.2, 0.3, 0.4]), groups))
    assert math.isnan(group_auc(np.array([]), np.array([]), np.array([])))


def test_group_auc_rejects_mismatched_groups() -> None:
    with pytest.raises(ValueError, match="groups must have shape"):
        group_auc(np.array([0, 1]), np.array([0.1, 0.2]), np.array([1, 2, 3]))


def test_group_auc_is_fast_for_many_groups() -> None:
    labels, probs = _tied_data(1_000_000, 7)
    groups = np.random.default_rng(7).integers(0, 100_000, len(labels))
    start = time.perf_counter()
    value = group_auc(labels, probs, groups)
    assert time.perf_counter() - start < 5.0  # about 0.7 s; two sorts, no loop over groups
    assert 0.5 < value < 1.0


def test_compute_metrics_keys() -> None:
    labels, probs = _tied_data(500, 4)
    assert set(compute_metrics(labels, probs)) == {"auc", "logloss"}
    metrics = compute_metrics(labels, probs, groups=np.arange(500) % 7)
    assert set(metrics) == {"auc", "logloss", "gauc"}
    assert all(isinstance(value, float) for value in metrics.values())
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probs), abs=1e-9)
