from __future__ import annotations

import pytest
import torch

from conftest import random_batch
from finalmlp.layout import FieldLayout
from finalmlp.models import build_model
from finalmlp.models.finalmlp import FinalMLP
from finalmlp.schema import DualMLPConfig, FinalMLPConfig, MLPConfig

SMALL_FINAL = FinalMLPConfig(
    embedding_dim=4,
    mlp1=MLPConfig(hidden_units=[16, 10], dropout=0.1, batch_norm=True),
    mlp2=MLPConfig(hidden_units=[20], dropout=0.1, batch_norm=True),
    fs_hidden_units=[8],
    fs1_context=["user", "history"],
    fs2_context=[],
    num_heads=2,
)
SMALL_DUAL = DualMLPConfig(
    embedding_dim=4,
    mlp1=MLPConfig(hidden_units=[16, 8], batch_norm=True),
    mlp2=MLPConfig(hidden_units=[8]),
)
CONFIGS = {"finalmlp": SMALL_FINAL, "dualmlp": SMALL_DUAL}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_shape_and_every_parameter_gets_a_gradient(name: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS[name])
    batch = random_batch(layout, size=16)
    assert model(batch).shape == (16, 1)  # (B, T): one task
    logits = model(batch)[:, 0]
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
    (loss + model.regularization(0.01, 0.01)).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        if pname in REFERENCE_DEAD_AT_INIT:
            continue
        assert param.grad.abs().sum() > 0, f"{pname} got a zero gradient"


# As in the reference, a context-free gate feeds a zero vector through Linear (zero bias) and
# ReLU: the pre-activation is exactly 0, ReLU'(0) = 0, so the vector and the first layer get a
# zero gradient at init; the output layer's bias still learns the gate.
REFERENCE_DEAD_AT_INIT = {
    "gate2.context_vector",
    "gate2.mlp.layers.0.weight",
    "gate2.mlp.layers.0.bias",
}


def test_context_free_gate_learns_through_its_output_layer(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, SMALL_FINAL)
    batch = random_batch(layout, size=16)
    torch.nn.functional.binary_cross_entropy_with_logits(model(batch)[:, 0], batch.label).backward()
    assert model.gate2.mlp.layers[-1].bias.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_seeded_construction_and_forward_are_deterministic(name: str, layout: FieldLayout) -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(layout, CONFIGS[name]).eval()
        outputs.append(model(random_batch(layout))[:, 0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_finalmlp_without_gating_equals_fusion_of_plain_streams(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    config = SMALL_FINAL.model_copy(update={"use_fs": False})
    model = FinalMLP(layout, config).eval()
    batch = random_batch(layout)
    flat = model.embedding(batch).flatten(1)
    expected = model.aggregation(model.mlp1(flat), model.mlp2(flat))
    torch.testing.assert_close(model(batch)[:, 0], expected)


def test_finalmlp_streams_see_gated_embeddings(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = FinalMLP(layout, SMALL_FINAL).eval()
    batch = random_batch(layout)
    with torch.no_grad():  # make the context gate far from 1 to see it act
        model.gate1.context.table.weight.normal_(std=3.0)
    flat = model.embedding(batch).flatten(1)
    g1, g2 = model.gates(batch)
    expected = model.aggregation(model.mlp1(flat * g1), model.mlp2(flat * g2))
    torch.testing.assert_close(model(batch)[:, 0], expected)
    assert not torch.allclose(g1, torch.ones_like(g1))


def test_reference_initialisation(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = FinalMLP(layout, SMALL_FINAL)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            assert torch.count_nonzero(module.bias) == 0
    table = model.embedding.table.weight
    assert 0.5e-4 < table[table.abs().sum(1) > 0].std() < 2e-4  # N(0, 1e-4)
    assert torch.count_nonzero(table[0]) == 0  # padding row of the first table


def test_regularization_matches_explicit_sum(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, SMALL_DUAL)
    emb = sum((m.weight**2).sum() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    net = sum(
        (p**2).sum()
        for n, p in model.named_parameters()
        if not n.startswith("embedding.table") and n.split(".")[-1] in ("weight", "bias")
    )
    torch.testing.assert_close(model.regularization(0.2, 0.0), 0.1 * emb)
    torch.testing.assert_close(model.regularization(0.0, 0.4), 0.2 * net)
