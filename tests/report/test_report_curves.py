"""ROC, precision-recall and reliability curves against scikit-learn; ECE by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import precision_recall_curve as sk_precision_recall_curve
from sklearn.metrics import roc_curve as sk_roc_curve

from finalmlp.report.curves import (
    DEFAULT_BINS,
    average_precision,
    expected_calibration_error,
    precision_recall_curve,
    reliability,
    roc_curve,
)


def _data(seed: int, rows: int = 2_000, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(size=rows)
    if ties:
        probs = np.round(probs, 1)  # many equal scores
    labels = (rng.uniform(size=rows) < probs).astype(np.float32)
    return labels, probs


@pytest.mark.parametrize("ties", [False, True])
def test_roc_curve_matches_sklearn(ties: bool) -> None:
    labels, probs = _data(1, ties=ties)
    fpr, tpr, thresholds = roc_curve(labels, probs)
    sk_fpr, sk_tpr, sk_thresholds = sk_roc_curve(labels, probs, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(labels, probs))


@pytest.mark.parametrize("ties", [False, True])
def test_precision_recall_curve_matches_sklearn(ties: bool) -> None:
    labels, probs = _data(2, ties=ties)
    precision, recall, thresholds = precision_recall_curve(labels, probs)
    sk_precision, sk_recall, sk_thresholds = sk_precision_recall_curve(labels, probs)
    np.testing.assert_allclose(precision, sk_precision)
    np.testing.assert_allclose(recall, sk_recall)
    np.testing.assert_allclose(thresholds, sk_thresholds)
    assert average_precision(labels, probs) == pytest.approx(average_precision_score(labels, probs))


@pytest.mark.parametrize("num_bins", [5, DEFAULT_BINS])
def test_reliability_matches_sklearn_calibration_curve(num_bins: int) -> None:
    labels, probs = _data(3)
    probs = np.r_[probs, 0.0, 0.2, 1.0]  # values on bin edges land as in scikit-learn
    labels = np.r_[labels, 0, 1, 1]
    bins = reliability(labels, probs, num_bins)
    sk_true, sk_pred = calibration_curve(labels, probs, n_bins=num_bins, strategy="uniform")
    filled = bins.counts > 0
    np.testing.assert_allclose(bins.frac_pos[filled], sk_true)
    np.testing.assert_allclose(bins.mean_pred[filled], sk_pred)
    assert bins.counts.sum() == len(probs) and len(bins.edges) == num_bins + 1


def test_ece_hand_example() -> None:
    # bin (0, .5]: mean prediction .1, 1 of 2 positive -> |.1 - .5| = .4, weight 2/4
    # bin (.5, 1]: mean prediction .9, 2 of 2 positive -> |.9 - 1| = .1, weight 2/4
    labels = np.array([0, 1, 1, 1])
    probs = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(labels, probs, num_bins=2) == pytest.approx(0.25)


def test_ece_matches_its_formula_and_is_zero_when_calibrated() -> None:
    labels, probs = _data(4, rows=5_000)
    bins = reliability(labels, probs)
    filled = bins.counts > 0
    expected = np.sum(
        bins.counts[filled] / len(probs) * np.abs(bins.mean_pred[filled] - bins.frac_pos[filled])
    )
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)
    constant = np.full(10, 0.3)
    assert expected_calibration_error(np.array([1, 1, 1] + [0] * 7), constant) == pytest.approx(0)


def test_curves_need_both_classes() -> None:
    with pytest.raises(ValueError, match="needs both classes"):
        roc_curve(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="needs positives"):
        precision_recall_curve(np.zeros(5), np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="equal length"):
        reliability(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="num_bins must be at least 1"):
        reliability(np.zeros(3), np.zeros(3), num_bins=0)
