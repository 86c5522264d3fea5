from __future__ import annotations

import pytest
import torch

from conftest import random_batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models.finalmlp_blocks import FeatureGate, InteractionAggregation
from finalmlp.models.layers import MLP, Dropout, FeatureEmbedding, reset_linear_layers


def explicit_aggregation(agg: InteractionAggregation, o1: torch.Tensor, o2: torch.Tensor):
    """logit = b + w1.o1 + w2.o2 + sum_h o1_h^T W_h o2_h, one row and one head at a time."""
    out = []
    d1, d2 = agg.head1, agg.head2
    bias = agg.linear1.bias + agg.linear2.bias
    for row in range(o1.shape[0]):
        value = bias + agg.linear1.weight[0] @ o1[row] + agg.linear2.weight[0] @ o2[row]
        for h in range(agg.num_heads):
            x = o1[row, h * d1 : (h + 1) * d1]
            y = o2[row, h * d2 : (h + 1) * d2]
            value = value + x @ agg.bilinear[h] @ y
        out.append(value)
    return torch.cat(out)


@pytest.mark.parametrize("heads", [1, 2, 5])
def test_aggregation_equals_explicit_per_head_formula(heads: int) -> None:
    torch.manual_seed(heads)
    agg = InteractionAggregation(20, 10, num_heads=heads)
    with torch.no_grad():  # non-trivial biases and weights
        agg.linear1.bias.fill_(0.3)
        agg.linear2.bias.fill_(-0.1)
        agg.bilinear.normal_()
    o1, o2 = torch.randn(7, 20), torch.randn(7, 10)
    torch.testing.assert_close(agg(o1, o2), explicit_aggregation(agg, o1, o2))


def test_aggregation_one_head_is_full_bilinear_form() -> None:
    torch.manual_seed(0)
    agg = InteractionAggregation(6, 4, num_heads=1)
    o1, o2 = torch.randn(3, 6), torch.randn(3, 4)
    bilinear = torch.einsum("bi,ij,bj->b", o1, agg.bilinear[0], o2)
    linear = agg.linear1(o1).squeeze(-1) + agg.linear2(o2).squeeze(-1)
    torch.testing.assert_close(agg(o1, o2), linear + bilinear)


def test_aggregation_rejects_heads_not_dividing_widths() -> None:
    with pytest.raises(ConfigError, match="num_heads=3 must divide both stream widths 20 and 10"):
        InteractionAggregation(20, 10, num_heads=3)


def test_gate_without_context_is_exactly_one_at_init(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    gate = FeatureGate(layout, 4, context_fields=[], hidden_units=[16])
    reset_linear_layers(gate)  # reference init: xavier weights, zero biases
    values = gate(random_batch(layout))
    assert values.shape == (1, 4 * layout.num_fields)  # one gate for the batch, broadcast
    torch.testing.assert_close(values, torch.ones_like(values))


def test_gate_with_context_starts_near_one_and_varies_per_row(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    gate = FeatureGate(layout, 4, context_fields=["user"], hidden_units=[16])
    reset_linear_layers(gate)
    values = gate(random_batch(layout, size=16))
    assert values.shape == (16, 4 * layout.num_fields)
    # Context embeddings start at N(0, 1e-4): the gate is 2*sigmoid(~0) = 1 within 1e-3.
    assert torch.allclose(values, torch.ones_like(values), atol=1e-3)
    with torch.no_grad():
        gate.context.table.weight.normal_()
    values = gate(random_batch(layout, size=16))
    assert values.min() >= 0 and values.max() <= 2
    assert values.std(dim=0).max() > 1e-3  # rows with different users get different gates


def test_feature_embedding_shapes_offsets_and_sharing(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding(layout, 5)
    batch = random_batch(layout)
    out = emb(batch)
    assert out.shape == (32, layout.num_fields, 5)
    # user and user2 share table 0: equal ids give equal embeddings
    same = batch.categorical[:, 0] == batch.categorical[:, 2]
    assert same.any()
    torch.testing.assert_close(out[same, 0], out[same, 2])
    # table 0 rows, table 1 rows and table 2 rows are disjoint in the fused table
    assert emb.table.num_embeddings == sum(layout.table_sizes)
    # numeric: value x vector
    torch.testing.assert_close(out[:, 3], batch.numeric[:, :1] * emb.numeric.weight[0])


def test_sequence_pooling_is_masked_mean(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding(layout, 3)
    with torch.no_grad():
        emb.table.weight.normal_()
    batch = random_batch(layout, size=8)
    pooled = emb(batch)[:, -1]
    offset = layout.table_sizes[0] + layout.table_sizes[1]
    for row in range(8):
        ids = batch.sequences[0][row]
        ids = ids[ids > 0].long()
        expected = emb.table.weight[ids + offset].mean(0) if len(ids) else torch.zeros(3)
        torch.testing.assert_close(pooled[row], expected)


def test_feature_embedding_subset_for_context(layout: FieldLayout) -> None:
    emb = FeatureEmbedding(layout, 4, fields=["item", "age"])
    out = emb(random_batch(layout))
    assert out.shape == (32, 2, 4)
    assert emb.table.num_embeddings == layout.table_sizes[1]  # only the item table


def test_mlp_layer_order_and_output() -> None:
    mlp = MLP(8, [16, 4], dropout=0.5, batch_norm=True, output_dim=1)
    kinds = [type(m).__name__ for m in mlp.layers]
    assert kinds == [
        "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU", "Dropout",
        "Linear",
    ]  # fmt: skip
    assert mlp(torch.randn(5, 8)).shape == (5, 1)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.4])
def test_dropout_keeps_each_element_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    layer = Dropout(p).train()
    x = torch.ones(2000, 401)  # odd element count: the 4-per-draw packing has a remainder
    out = layer(x)
    kept = out != 0
    # each 16-bit lane of the 64-bit draws (columns cycle through the lanes) keeps 1 - p
    for lane in range(4):
        lane_rate = kept.flatten()[lane::4].float().mean().item()
        assert abs(lane_rate - (1 - p)) < 0.006
    # kept values are scaled so the expectation is unchanged
    scale = out[kept].unique()
    assert scale.numel() == 1
    assert abs(out.mean().item() - 1.0) < 0.01
    assert abs(scale.item() * (1 - p) - 1.0) < 1e-4


def test_dropout_gradient_is_mask_times_scale_and_seeded() -> None:
    layer = Dropout(0.3).train()
    x = torch.randn(64, 50, requires_grad=True)
    torch.manual_seed(7)
    out = layer(x)
    out.backward(torch.ones_like(out))
    assert x.grad is not None
    ratio = torch.where(out != 0, out / x, torch.zeros_like(out))
    assert torch.allclose(x.grad, ratio, atol=1e-5)  # d out / d x = keep * scale
    torch.manual_seed(7)
    assert torch.equal(layer(x), out)  # same seed, same mask
    assert not torch.equal(layer(x), out)  # the generator moved on


def test_dropout_is_identity_in_eval_and_with_p_zero() -> None:
    x = torch.randn(8, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.count_nonzero(Dropout(1.0).train()(x)) == 0


@pytest.mark.parametrize("context", [["user"], ["user", "item"]])
def test_gate_over_distinct_context_ids_equals_the_per_row_gate(
    layout: FieldLayout, context: list[str]
) -> None:
    """The gate MLP runs once per distinct context id (combination): values and gradients
    are those of running it on every row."""
    torch.manual_seed(0)
    gate = FeatureGate(layout, 4, context_fields=context, hidden_units=[16])
    with torch.no_grad():
        gate.context.table.weight.normal_()
    batch = random_batch(layout, size=64, seed=4)
    ids = batch.categorical[:, gate.context.cat_cols]
    assert len(torch.unique(ids, dim=0)) < 64  # repeated contexts: the shortcut is taken
    weights = torch.randn(64, 4 * layout.num_fields)
    fast = gate(batch)
    (fast * weights).sum().backward()
    fast_grads = [p.grad.clone() for p in gate.parameters()]
    gate.zero_grad()
    per_row = 2.0 * torch.sigmoid(gate.mlp(gate.context(batch).flatten(start_dim=1)))
    (per_row * weights).sum().backward()
    torch.testing.assert_close(fast, per_row)
    for got, want in zip(fast_grads, [p.grad for p in gate.parameters()], strict=True):
        torch.testing.assert_close(got, want)


def test_embedding_lookup_equals_the_table_rows(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    emb = FeatureEmbedding(layout, 5)
    with torch.no_grad():
        emb.table.weight.normal_()
    batch = random_batch(layout, size=16)
    ids = batch.categorical + emb.cat_offsets
    torch.testing.assert_close(emb(batch)[:, :3], emb.table(ids))
    emb.table.sparse = True  # the sparse path goes through nn.Embedding itself
    torch.testing.assert_close(emb(batch)[:, :3], emb.table(ids))
