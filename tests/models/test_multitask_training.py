"""The multi-task models learning and leaving the process: expert statistics on known cases,
overfitting a synthetic two-task problem, training through ``train_from_config`` on a CSV with
two correlated labels, and ONNX export with a (B, T) output scoring like PyTorch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from torch.nn import functional

from conftest import random_batch
from finalmlp.batch import Batch
from finalmlp.bundle import load_run
from finalmlp.config import parse_config
from finalmlp.layout import FieldLayout
from finalmlp.metrics import roc_auc
from finalmlp.models import build_model
from finalmlp.models.experts import MixtureModel
from finalmlp.schema import HoMEConfig, MLPConfig, MMoEConfig, PLEConfig, ShareBottomConfig
from finalmlp.serve.onnx import OnnxModel, export_onnx, sample_features, torch_probabilities
from finalmlp.train.run import train_from_config


# ----------------------------------------------------------------------------- statistics
def test_expert_stats_on_experts_with_known_outputs(layout: FieldLayout) -> None:
    """Zero gates are uniform; constant experts have known dead fractions and scales."""
    torch.manual_seed(0)
    config = MMoEConfig(embedding_dim=4, num_experts=3, expert=MLPConfig(hidden_units=[4]))
    model = build_model(layout, config, 2)
    assert isinstance(model, MixtureModel)
    with torch.no_grad():
        for gate in model.gates:
            gate.mlp[0].weight.zero_()
            gate.mlp[0].bias.zero_()
        biases = ([-1.0] * 4, [2.0] * 4, [1.0, -1.0, 1.0, -1.0])  # ReLU(bias): 0, 2, 2 of 4
        linear = model.experts.linears[0]  # the three experts' layer, batched
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor(biases))
    model.train()
    stats = model.expert_stats([random_batch(layout, 8), random_batch(layout, 24, seed=1)])
    assert model.training  # the mode is restored
    assert all(p.grad is None for p in model.parameters())
    assert stats.experts == ["expert.0", "expert.1", "expert.2"] and stats.levels == [1, 1, 1]
    assert stats.rows == 32
    assert np.allclose(stats.gate_weights, 1 / 3)
    assert stats.dead_fraction == [1.0, 0.0, 0.5]
    assert stats.mean_abs == pytest.approx([0.0, 2.0, 0.5])
    assert stats.to_dict()["dead_fraction"] == [1.0, 0.0, 0.5]


def test_expert_stats_over_batches_are_row_weighted_means(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    config = PLEConfig(embedding_dim=4, expert=MLPConfig(hidden_units=[8]), num_levels=2)
    model = build_model(layout, config, 2)
    assert isinstance(model, MixtureModel)
    first, second = random_batch(layout, 8), random_batch(layout, 24, seed=1)
    both, one, two = (model.expert_stats(b) for b in ([first, second], first, second))
    for key in ("gate_weights", "dead_fraction", "mean_abs"):
        combined = (8 * np.array(getattr(one, key)) + 24 * np.array(getattr(two, key))) / 32
        np.testing.assert_allclose(getattr(both, key), combined, rtol=1e-5)


def test_home_normalised_swish_experts_have_no_dead_units(layout: FieldLayout) -> None:
    """Swish is 0 only at 0: no dead units; the same experts with ReLU have about half."""
    expert = MLPConfig(hidden_units=[16, 8], batch_norm=True)
    dead = {}
    for activation in ("swish", "relu"):
        torch.manual_seed(0)
        config = HoMEConfig(embedding_dim=4, expert=expert, expert_activation=activation)
        model = build_model(layout, config, 2)
        assert isinstance(model, MixtureModel)
        stats = model.expert_stats(random_batch(layout, 64))
        assert min(stats.mean_abs) > 0
        dead[activation] = stats.dead_fraction
    assert max(dead["swish"]) == 0.0
    assert all(0.2 < d < 0.8 for d in dead["relu"]), dead["relu"]


# ----------------------------------------------------------------------------- learning
SMALL = MLPConfig(hidden_units=[32, 16], batch_norm=True)
TOWER = MLPConfig(hidden_units=[8])
LEARNERS: dict[str, Any] = {
    "sharebottom": ShareBottomConfig(embedding_dim=8, bottom=SMALL, tower=TOWER),
    "mmoe": MMoEConfig(embedding_dim=8, num_experts=3, expert=SMALL, tower=TOWER),
    "ple": PLEConfig(embedding_dim=8, expert=SMALL, tower=TOWER),
    "home": HoMEConfig(embedding_dim=8, task_groups=[[0], [1]], expert=SMALL, tower=TOWER),
}


def two_tasks(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ids of 40 users and 40 items (2.. as encoded) and two correlated 0/1 labels: click
    when the user's and item's scores sum above 0, buy from the same user score and another
    item score (a third of the rows differ between the tasks). The scores are the same for
    every ``seed``; the rows drawn differ."""
    user_score, item_score, item_price = np.random.default_rng(0).normal(size=(3, 40))
    rng = np.random.default_rng(seed + 1)
    users, items = rng.integers(0, 40, rows), rng.integers(0, 40, rows)
    click = user_score[users] + item_score[items] > 0
    buy = user_score[users] - item_price[items] > 0.3
    ids = np.stack([users, items], axis=1) + 2
    return ids.astype(np.int32), np.stack([click, buy], axis=1).astype(np.float32)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Models this small run fastest on one thread, and do not fight other processes for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(LEARNERS))
@pytest.mark.usefixtures("one_thread")
def test_overfits_a_small_two_task_problem(name: str) -> None:
    layout = FieldLayout(
        table_sizes=(42, 42),
        categorical_fields=("user", "item"),
        categorical_tables=(0, 1),
        numeric_fields=(),
        sequence_fields=(),
        sequence_tables=(),
    )
    ids, labels = two_tasks(2_000)
    data = Batch(torch.from_numpy(ids), torch.zeros(2_000, 0))
    target = torch.from_numpy(labels)
    torch.manual_seed(0)
    model = build_model(layout, LEARNERS[name], 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):  # 20 epochs of 10 batches of 200: 200 steps
        for rows in torch.randperm(2_000, generator=generator).split(200):
            logits = model(Batch(data.categorical[rows], data.numeric[rows]))
            loss = functional.binary_cross_entropy_with_logits(logits, target[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        scores = model.eval()(data).numpy()
    for task in range(2):
        auc = roc_auc(labels[:, task], scores[:, task])
        assert auc > 0.9, f"{name}: task {task} train AUC {auc:.4f} after 200 steps"


def test_the_two_labels_are_correlated_but_differ() -> None:
    _, labels = two_tasks(2_000)
    agree = (labels[:, 0] == labels[:, 1]).mean()
    assert 0.55 < agree < 0.8 and labels.mean(axis=0).min() > 0.3


@pytest.mark.parametrize("name", sorted(LEARNERS))
@pytest.mark.usefixtures("one_thread")
def test_trains_end_to_end_from_a_csv_with_two_labels(name: str, tmp_path: Path) -> None:
    for split, rows, seed in (("train", 4_000, 0), ("valid", 1_000, 1), ("test", 1_000, 2)):
        ids, labels = two_tasks(rows, seed)
        columns = {"user": ids[:, 0], "item": ids[:, 1], "click": labels[:, 0]}
        pl.DataFrame({**columns, "buy": labels[:, 1]}).cast(pl.Int64).write_csv(
            tmp_path / f"{split}.csv"
        )
    model = LEARNERS[name].model_dump()
    if name == "home":
        model["task_groups"] = [["buy"], ["click"]]
    config = parse_config(
        {
            "data": {
                **{s: str(tmp_path / f"{s}.csv") for s in ("train", "valid", "test")},
                "labels": ["click", "buy"],
                "features": [
                    {"name": "user", "type": "categorical"},
                    {"name": "item", "type": "categorical"},
                ],
                "cache_dir": str(tmp_path / "cache"),
            },
            "model": model,
            "train": {"batch_size": 256, "learning_rate": 0.01, "max_epochs": 4, "progress": False},
        }
    )
    metrics = train_from_config(config)
    valid = metrics["valid"]
    for task in ("click", "buy"):
        assert valid[f"{task}.auc"] > 0.8, (name, valid)
    assert valid["auc"] == pytest.approx((valid["click.auc"] + valid["buy.auc"]) / 2)


# ----------------------------------------------------------------------------- ONNX
def _serve_runs() -> Any:
    """tests/serve/serve_runs.py: small run directories holding every input kind."""
    path = Path(__file__).resolve().parents[1] / "serve" / "serve_runs.py"
    spec = importlib.util.spec_from_file_location("multitask_serve_runs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXPORTED: dict[str, dict[str, Any]] = {
    "sharebottom": {"bottom": {"hidden_units": [16], "batch_norm": True}},
    "mmoe": {"num_experts": 3, "expert": {"hidden_units": [16, 8], "batch_norm": True}},
    "ple": {"num_shared_experts": 2, "expert": {"hidden_units": [8], "batch_norm": True}},
    "home": {"task_groups": [["buy"], ["click"]], "expert": {"hidden_units": [8, 8]}},
}


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exports_to_onnx_with_one_output_per_task(name: str, tmp_path: Path) -> None:
    model = {"name": name, "embedding_dim": 4, "tower": {"hidden_units": [4]}, **EXPORTED[name]}
    run_dir = _serve_runs().make_run(tmp_path, model, labels=["click", "buy"])
    result = export_onnx(run_dir)
    assert result.max_abs_diff <= 1e-5
    run = load_run(run_dir)
    features = sample_features(run, 100, seed=7)
    onnx_scores = OnnxModel.from_run(run_dir).predict(features)
    torch_scores = torch_probabilities(run.model, features)
    assert onnx_scores.shape == (100, 2) and torch_scores.shape == (100, 2)
    assert torch_scores.std(axis=0).min() > 1e-3  # rows score differently in both tasks
    assert np.abs(torch_scores[:, 0] - torch_scores[:, 1]).max() > 1e-3  # tasks differ
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-5)
