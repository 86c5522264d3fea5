"""Folded gates: a gate whose context is one categorical field becomes a per-id lookup that
scores exactly like the MLP it replaces; any other gate is left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from serve_runs import FINALMLP, make_run, rows

import finalmlp.serve.fold as fold_module
from finalmlp.bundle import load_run
from finalmlp.models.finalmlp_blocks import FeatureGate
from finalmlp.predict import read_for_run
from finalmlp.serve.fold import FoldedGate, serving_model
from finalmlp.serve.onnx import torch_probabilities


def _scores(tmp_path: Path, model: dict) -> tuple[object, np.ndarray, np.ndarray]:
    run = load_run(make_run(tmp_path, model))
    rows(80, seed=4).write_csv(tmp_path / "score.csv")
    features = read_for_run(run, tmp_path / "score.csv", require_label=False).features
    served = serving_model(run.model)
    return served, torch_probabilities(served, features), torch_probabilities(run.model, features)


def test_single_field_gates_fold_and_score_the_same(tmp_path: Path) -> None:
    model = {**FINALMLP, "fs1_context": ["user"], "fs2_context": ["tags"]}
    served, folded, original = _scores(tmp_path, model)
    assert isinstance(served.gate1, FoldedGate)  # type: ignore[attr-defined]
    assert isinstance(served.gate2, FeatureGate)  # a sequence context is not folded
    assert original.std() > 0.05
    np.testing.assert_allclose(folded, original, rtol=0, atol=1e-6)


def test_the_trained_model_is_left_unchanged(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path, {**FINALMLP, "fs1_context": ["item"]}))
    served = serving_model(run.model)
    assert served is not run.model
    assert isinstance(run.model.gate1, FeatureGate)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "model",
    [
        FINALMLP,  # contexts user + price, and a sequence
        {**FINALMLP, "fs1_context": [], "fs2_context": []},
        {"name": "lr"},
    ],
    ids=["multi-field", "context-free", "lr"],
)
def test_other_models_are_served_as_they_are(tmp_path: Path, model: dict) -> None:
    run = load_run(make_run(tmp_path, model))
    assert serving_model(run.model) is run.model


def test_a_gate_with_too_many_values_is_not_folded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fold_module, "FOLD_MAX_VALUES", 10)
    run = load_run(make_run(tmp_path, {**FINALMLP, "fs1_context": ["user"]}))
    assert serving_model(run.model) is run.model
