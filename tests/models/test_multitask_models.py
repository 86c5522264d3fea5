"""The multi-task models: ShareBottom, MMoE, PLE, HoME.

Per model: logits (B, T) for T = 1, 2, 3, a gradient for every parameter from a loss over all
tasks, seeded determinism, and overfitting a small synthetic two-task problem. For the
mixtures of experts: gates sum to 1, the hierarchy mask hides experts from a task (zero gate
weight, zero gradient), HoME's feature-gates start at 1, and the expert statistics on a case
whose answer is known.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.nn import functional

from conftest import random_batch
from finalmlp.batch import Batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models import build_model
from finalmlp.models.base import CTRModel
from finalmlp.models.experts import ExpertTrace, LowRankFeatureGate, MixtureModel
from finalmlp.models.home import HoME
from finalmlp.models.mmoe import MMoE
from finalmlp.schema import (
    DNNConfig,
    HoMEConfig,
    MLPConfig,
    MMoEConfig,
    PLEConfig,
    ShareBottomConfig,
)

EXPERT = MLPConfig(hidden_units=[16, 8], dropout=0.1)
NORMALISED = MLPConfig(hidden_units=[16, 8], dropout=0.1, batch_norm=True)
TOWER = MLPConfig(hidden_units=[4], batch_norm=True)
CONFIGS: dict[str, Any] = {
    "sharebottom": ShareBottomConfig(embedding_dim=4, bottom=EXPERT, tower=TOWER),
    "mmoe": MMoEConfig(embedding_dim=4, num_experts=3, expert=EXPERT, tower=TOWER),
    "mmoe-gate-mlp": MMoEConfig(
        embedding_dim=4, num_experts=3, expert=EXPERT, gate_hidden_units=[6], tower=TOWER
    ),
    "ple": PLEConfig(
        embedding_dim=4, num_levels=2, num_shared_experts=2, expert=EXPERT, tower=TOWER
    ),
    "cgc": PLEConfig(embedding_dim=4, num_levels=1, num_task_experts=2, expert=EXPERT, tower=TOWER),
    "home": HoMEConfig(
        embedding_dim=4, num_shared_experts=2, expert=NORMALISED, feature_gate_rank=3, tower=TOWER
    ),
    "home-plain": HoMEConfig(
        embedding_dim=4,
        expert=EXPERT,
        expert_activation="relu",
        feature_gate=False,
        self_gate=False,
        tower=TOWER,
    ),
}
MIXTURES = ["mmoe", "ple", "cgc", "home", "home-plain"]
# Zero at init by design: a feature-gate's up-projection starts at 0 (gate = 1), so its
# down-projection's gradient is 0 until the up-projection has moved (see the next test).
ZERO_AT_INIT = ".down.weight"


def home(groups: list[list[int]] | None, **update: Any) -> HoMEConfig:
    return CONFIGS["home"].model_copy(update={"task_groups": groups, **update})


def all_tasks_loss(model: CTRModel, batch: Batch) -> torch.Tensor:
    logits = model(batch)
    assert batch.label is not None
    labels = batch.label.unsqueeze(1).expand_as(logits)
    return functional.binary_cross_entropy_with_logits(logits, labels)


# ----------------------------------------------------------------------------- every model
@pytest.mark.parametrize("tasks", [1, 2, 3])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_are_batch_by_tasks(name: str, tasks: int, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS[name], tasks)
    assert model.num_tasks == tasks
    logits = model(random_batch(layout, size=16))
    assert logits.shape == (16, tasks) and logits.dtype == torch.float32
    assert model.eval()(random_batch(layout, size=5)).shape == (5, tasks)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_parameter_gets_a_gradient_from_the_tasks(name: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    config = home([[0, 2], [1]]) if name == "home" else CONFIGS[name]
    model = build_model(layout, config, 3)
    batch = random_batch(layout, size=16)
    (all_tasks_loss(model, batch) + model.regularization(0.01, 0.01)).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        if not pname.endswith(ZERO_AT_INIT):
            assert param.grad.abs().sum() > 0, f"{pname} got a zero gradient"


def test_feature_gate_down_projection_learns_once_the_up_projection_moved(
    layout: FieldLayout,
) -> None:
    torch.manual_seed(0)
    model = build_model(layout, home(None), 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = random_batch(layout, size=16)
    for _ in range(2):
        optimizer.zero_grad()
        all_tasks_loss(model, batch).backward()
        optimizer.step()
    downs = [m.down.weight for m in model.modules() if isinstance(m, LowRankFeatureGate)]
    assert len(downs) == 3  # 2 shared + 1 group expert at level 1
    assert all(down.grad is not None and down.grad.abs().sum() > 0 for down in downs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_seeded_construction_and_forward_are_deterministic(name: str, layout: FieldLayout) -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(layout, CONFIGS[name], 2).eval()
        outputs.append(model(random_batch(layout)))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_a_single_task_model_refuses_several_tasks(layout: FieldLayout) -> None:
    with pytest.raises(ConfigError, match=r"model 'dnn' predicts one task, but data.labels has 2"):
        build_model(layout, DNNConfig(), 2)


def test_sharebottom_is_towers_over_one_shared_bottom(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS["sharebottom"], 2).eval()
    batch = random_batch(layout)
    shared = model.bottom(model.embedding(batch).flatten(1))
    expected = torch.cat([model.towers[0](shared), model.towers[1](shared)], dim=1)
    torch.testing.assert_close(model(batch), expected)


def test_mmoe_follows_the_paper_formula(layout: FieldLayout) -> None:
    """y_t = tower_t(sum_i softmax(W_t x)_i f_i(x)), row by row."""
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS["mmoe"], 2).eval()
    assert isinstance(model, MMoE)
    batch = random_batch(layout, size=4)
    x = model.embedding(batch).flatten(1)
    for task in range(2):
        weights = torch.softmax(model.gates[task].mlp[0](x), dim=1)  # one linear map
        experts = model.experts(x)  # (B, 3, H), checked against separate MLPs below
        mixed = sum(weights[:, i : i + 1] * experts[:, i] for i in range(3))
        torch.testing.assert_close(model(batch)[:, task : task + 1], model.towers[task](mixed))


# ----------------------------------------------------------------------------- gates and mask
def traced(model: MixtureModel, batch: Batch) -> ExpertTrace:
    trace = ExpertTrace(model.num_tasks)
    with torch.no_grad():
        model.eval().run(batch, trace)
    return trace


@pytest.mark.parametrize("name", MIXTURES)
def test_each_tasks_gates_sum_to_one_per_level_on_every_row(name: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS[name], 3)
    assert isinstance(model, MixtureModel)
    trace = traced(model, random_batch(layout, size=8))
    levels = sorted(set(trace.levels.values()))
    for gates in trace.task_gates:
        for level in levels:
            weights = [w for n, w in gates.items() if trace.levels[n] == level]
            assert weights and all((w >= 0).all() for w in weights)
            torch.testing.assert_close(torch.stack(weights).sum(0), torch.ones(8))


def test_ple_task_gates_never_see_other_tasks_experts(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS["ple"], 3)
    stats = model.expert_stats(random_batch(layout))  # type: ignore[operator]
    for task, weights in enumerate(stats.gate_weights):
        for name, weight in zip(stats.experts, weights, strict=True):
            owner = name.split(".")[1]  # shared, task0, task1 ...
            assert (weight > 0) == (owner in ("shared", f"task{task}")), (task, name)
    # a loss on task 0 alone: the other tasks' experts of the last level get no gradient
    model.zero_grad()
    model(random_batch(layout))[:, 0].sum().backward()
    for pname, param in model.named_parameters():
        other = any(f"levels.1.task_experts.{t}." in pname for t in (1, 2))
        if other or ".task_gates.1." in pname or "towers.1." in pname:
            assert param.grad is None or torch.count_nonzero(param.grad) == 0, pname


def test_home_hierarchy_mask_follows_the_groups(layout: FieldLayout) -> None:
    """Groups {0, 2} and {1}: task 0 sees the shared and group-0 experts at both levels and
    its own at level 2; never group 1's, task 1's or task 2's."""
    torch.manual_seed(0)
    model = build_model(layout, home([[0, 2], [1]]), 3)
    stats = model.expert_stats(random_batch(layout))  # type: ignore[operator]
    visible = {0: ("shared", "group0", "task0"), 1: ("shared", "group1", "task1")}
    visible[2] = ("shared", "group0", "task2")
    for task, weights in enumerate(stats.gate_weights):
        seen = {n for n, w in zip(stats.experts, weights, strict=True) if w > 0}
        hidden = {n for n, w in zip(stats.experts, weights, strict=True) if w == 0.0}
        assert seen == {n for n in stats.experts if n.split(".")[1] in visible[task]}
        assert seen | hidden == set(stats.experts)
    model.zero_grad()
    model(random_batch(layout))[:, 0].sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}

    def moved(prefix: str) -> bool:
        found = [g for n, g in grads.items() if n.startswith(prefix)]
        assert found, prefix
        return any(g is not None and torch.count_nonzero(g) > 0 for g in found)

    masked_prefixes = ("group2.1.", "group_gates.1.", "group_self_gates.1.", "task2.1.")
    masked_prefixes += ("task2.2.", "task_gates.1.", "task_self_gates.2.", "towers.2.")
    for masked in masked_prefixes:
        assert not moved(masked), masked
    # group 1's level-1 experts still reach task 0 through the shared meta representation
    assert moved("group1.1.") and moved("shared2.") and moved("task2.0.")


def test_home_feature_gates_start_at_one(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, home(None), 2)
    assert isinstance(model, HoME) and model.feature_gates is not None
    v = torch.randn(6, 4 * layout.num_fields) * 3
    for gate in model.feature_gates:
        assert torch.equal(gate(v), torch.ones_like(v))  # 2 * sigmoid(0), exactly


def test_home_groups_by_name_come_from_the_config() -> None:
    from finalmlp.config import parse_config

    data = {
        "train": "rows.csv",
        "features": [{"name": "u", "type": "categorical"}],
        "labels": ["a", "b", "c"],
    }
    raw: dict[str, Any] = {"data": data, "model": {"name": "home"}}
    raw["model"]["task_groups"] = [["c", "a"], [1]]
    config = parse_config(raw)
    assert config.model.task_groups == [[2, 0], [1]]
    for groups, message in [
        ([["a", "x"], ["b", "c"]], r"names task 'x'; the tasks are \['a', 'b', 'c'\]"),
        ([["a"], ["b"]], r"leaves out tasks \['c'\]"),
        ([["a", "b"], ["b", "c"]], r"lists \['b'\] in more than one place"),
        ([[0, 1, 5]], r"task index 5, but there are 3 tasks"),
    ]:
        raw["model"]["task_groups"] = groups
        with pytest.raises(ConfigError, match=message):
            parse_config(raw)


def test_home_built_with_unresolved_names_says_how_to_fix(layout: FieldLayout) -> None:
    with pytest.raises(ConfigError, match="built without the task names"):
        build_model(layout, home([["click"], ["buy"]]), 2)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"leaves out tasks \['#2'\]"):
        build_model(layout, home([[0], [1]]), 3)


@pytest.mark.parametrize("shared_input", [True, False])
@pytest.mark.parametrize("activation", ["relu", "swish"])
def test_expert_group_computes_what_separate_expert_mlps_compute(
    shared_input: bool, activation: str
) -> None:
    from finalmlp.models.experts import ExpertGroup
    from finalmlp.schema import MLPConfig

    torch.manual_seed(0)
    config = MLPConfig(hidden_units=[6, 5], batch_norm=True)
    group = ExpertGroup(3, 4, config, activation, shared_input).train()  # type: ignore[arg-type]
    x = torch.randn(16, 4) if shared_input else torch.randn(16, 3, 4)
    out = group(x)
    assert out.shape == (16, 3, 5)
    act = torch.nn.SiLU() if activation == "swish" else torch.nn.ReLU()
    for k in range(3):
        h = x if shared_input else x[:, k]
        for layer, (linear, norm) in enumerate(zip(group.linears, group.norms, strict=True)):
            weight = linear.weight[:, k] if linear.shared_input else linear.weight[k]
            h = h @ weight + linear.bias[k]
            units = slice(k * h.shape[1], (k + 1) * h.shape[1])
            mean, var = h.mean(dim=0), h.var(dim=0, unbiased=False)
            h = (h - mean) / torch.sqrt(var + norm.eps) * norm.weight[units] + norm.bias[units]
            h = act(h)
            del layer
        torch.testing.assert_close(out[:, k], h, rtol=1e-5, atol=1e-5)
