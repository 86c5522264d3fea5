"""DIN: shapes, gradients, the attention requirement, the Dice MLP, and mini-batch aware
regularisation against its formula."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import random_batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout, Pooling
from finalmlp.models import build_model
from finalmlp.models.attention import Dice, TargetAttention
from finalmlp.models.din import DIN
from finalmlp.schema import DINConfig, MLPConfig

CONFIG = DINConfig(embedding_dim=4, mlp=MLPConfig(hidden_units=[16, 8]))


def _din_layout(layout: FieldLayout) -> FieldLayout:
    pooling = Pooling("attention", target=0, hidden_units=(8,))
    return replace(layout, categorical_tables=(2, 1, 0), sequence_pooling=(pooling,))


def test_din_gives_logits_and_trains_every_parameter(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    din_layout = _din_layout(layout)
    model = build_model(din_layout, CONFIG)
    assert isinstance(model, DIN)
    assert [type(m) for m in model.mlp.layers if isinstance(m, Dice)] == [Dice, Dice]
    assert any(isinstance(m, TargetAttention) for m in model.modules())
    with torch.no_grad():
        model.embedding.table.weight.normal_()
    logits = model(random_batch(din_layout))
    assert logits.shape == (32, 1)
    logits.pow(2).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert "frequency" not in model.state_dict()  # mba counts are not saved


def test_din_needs_an_attention_pooled_sequence(layout: FieldLayout) -> None:
    with pytest.raises(ConfigError, match="needs a behaviour sequence pooled by attention"):
        DIN(layout, CONFIG)


@pytest.mark.parametrize("activation", ["prelu", "relu"])
def test_din_mlp_activation_options(layout: FieldLayout, activation: str) -> None:
    model = DIN(_din_layout(layout), CONFIG.model_copy(update={"activation": activation}))
    kinds = {type(m).__name__ for m in model.mlp.layers}
    assert ("PReLU" if activation == "prelu" else "ReLU") in kinds and "Dice" not in kinds


def test_mini_batch_aware_l2_matches_its_formula(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    din_layout = _din_layout(layout)
    model = DIN(din_layout, CONFIG.model_copy(update={"mba_l2": 0.5}))
    with torch.no_grad():
        model.embedding.table.weight.normal_()
        model.embedding.table.weight[model.embedding.padding_rows] = 0.0
    batch = random_batch(din_layout, size=8)
    model.train()
    logits = model(batch)
    loss = model.auxiliary_loss(logits, batch.label.unsqueeze(1))  # type: ignore[union-attr]
    rows = model.embedding.lookup_rows(batch)
    weight = model.embedding.table.weight
    expected = torch.zeros(())
    for row in torch.unique(rows):
        per_row = (rows == row).sum() / 8  # occurrences per row (first batch: exact)
        expected = expected + weight[row].pow(2).sum() / (8 * per_row)
    assert loss is not None
    torch.testing.assert_close(loss, 0.25 * expected)
    loss.backward()
    assert weight.grad is not None
    unused = torch.ones(weight.shape[0], dtype=torch.bool)
    unused[rows] = False
    assert weight.grad[unused].abs().sum() == 0  # only the batch's rows are penalised
    model.eval()
    model(batch)
    assert model.auxiliary_loss(logits, batch.label) is None  # type: ignore[arg-type]


def test_no_mba_adds_nothing(layout: FieldLayout) -> None:
    model = DIN(_din_layout(layout), CONFIG).train()
    batch = random_batch(_din_layout(layout))
    assert model.auxiliary_loss(model(batch), batch.label) is None  # type: ignore[arg-type]
