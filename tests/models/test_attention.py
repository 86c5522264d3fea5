"""Sequence pooling: mean/sum/attention against explicit formulas, Dice, masking, the config
checks of ``target``, and attention pooling inside every model of the zoo."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from conftest import random_batch
from finalmlp.layout import FieldLayout, Pooling
from finalmlp.models import build_model
from finalmlp.models.attention import Dice, MeanPooling, SumPooling, TargetAttention
from finalmlp.models.layers import FeatureEmbedding
from finalmlp.schema import DataConfig, ExperimentConfig

ATTENTION = Pooling("attention", target=0, hidden_units=(8, 4))


def _attention_layout(layout: FieldLayout, pooling: Pooling = ATTENTION) -> FieldLayout:
    """The conftest layout whose history (table 2) is attended with query field 0 on table 2."""
    return replace(
        layout,
        categorical_tables=(2, 1, 0),
        sequence_pooling=(pooling,),
    )


def test_dice_matches_its_formula_in_training_and_eval() -> None:
    torch.manual_seed(0)
    dice = Dice(3)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.1, -0.5, 2.0]))
    x = torch.randn(50, 3)
    mean, var = x.mean(0), x.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + 1e-9))
    torch.testing.assert_close(dice(x), p * x + (1 - p) * dice.alpha * x)
    dice.eval()  # moving averages now
    bn = torch.nn.BatchNorm1d(3, eps=1e-9, affine=False)
    bn(x)  # the same moving averages as BatchNorm
    torch.testing.assert_close(dice.running_mean, bn.running_mean)
    torch.testing.assert_close(dice.running_var, bn.running_var)
    running = (x - dice.running_mean) / torch.sqrt(dice.running_var + 1e-9)
    p = torch.sigmoid(running)
    torch.testing.assert_close(dice(x), p * x + (1 - p) * dice.alpha * x)


def test_dice_statistics_leave_out_masked_rows() -> None:
    dice = Dice(2)
    x, mask = torch.randn(10, 2), torch.arange(10) < 6
    torch.testing.assert_close(dice(x, mask)[:6], Dice(2)(x[:6]))


def _items() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    items = torch.randn(4, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]])
    items = items * mask.unsqueeze(-1)  # padding rows of a table are zero
    return items, mask.bool(), torch.randn(4, 6)


def test_mean_and_sum_pooling_mask_padding() -> None:
    items, mask, _ = _items()
    expected = torch.stack([items[b, mask[b]].sum(0) for b in range(4)])
    torch.testing.assert_close(SumPooling()(items, mask), expected)
    counts = mask.sum(1, keepdim=True).clamp(min=1)
    torch.testing.assert_close(MeanPooling()(items, mask), expected / counts)


@pytest.mark.parametrize("softmax", [False, True])
def test_target_attention_is_dins_weighted_sum(softmax: bool) -> None:
    items, mask, query = _items()
    torch.manual_seed(2)
    attention = TargetAttention(6, Pooling("attention", 0, (8,), "prelu", softmax))
    out = attention(items, mask, query)
    for b in range(4):
        scores = []
        for j in range(5):
            k, q = items[b, j], query[b]
            h = torch.cat([q, k, q - k, q * k]).unsqueeze(0)
            h = attention.unit.activations[0](attention.unit.linears[0](h))
            scores.append(attention.unit.output(h)[0, 0])
        w = torch.stack(scores)
        if softmax:
            w = torch.where(mask[b], w, torch.tensor(-1e9)).softmax(0)
        w = w * mask[b]
        torch.testing.assert_close(out[b], (w.unsqueeze(1) * items[b]).sum(0))
    assert torch.equal(out[2], torch.zeros(6))  # an empty history pools to zero
    weights = attention.weights(items, mask, query)
    assert (weights[~mask] == 0).all()
    if softmax:
        torch.testing.assert_close(weights[0].sum(), torch.tensor(1.0))
    else:  # intensities are kept: the weights need not sum to 1
        assert not torch.allclose(weights[1].sum(), torch.tensor(1.0))


def test_attention_ignores_item_order_and_padding_values() -> None:
    items, mask, query = _items()
    attention = TargetAttention(6, ATTENTION).eval()
    order = torch.tensor([2, 0, 1, 3, 4])
    torch.testing.assert_close(
        attention(items, mask, query)[0], attention(items[:, order], mask[:, order], query)[0]
    )


def test_feature_embedding_with_attention_reaches_every_parameter(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    embedding = FeatureEmbedding(_attention_layout(layout), 4)
    with torch.no_grad():
        embedding.table.weight.normal_()
        embedding.table.weight[embedding.padding_rows] = 0.0
    out = embedding(random_batch(_attention_layout(layout)))
    assert out.shape == (32, 6, 4)
    out.pow(2).sum().backward()
    for name, param in embedding.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # padding rows get no gradient: they stay zero
    assert embedding.table.weight.grad[embedding.padding_rows].abs().sum() == 0  # type: ignore[index]


@pytest.mark.parametrize(
    "name", ["finalmlp", "dnn", "deepfm", "dcnv2", "widedeep", "fm", "autoint", "xdeepfm", "lr"]
)
def test_every_model_takes_an_attention_pooled_field(name: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    config: dict[str, Any] = {"name": name}
    if name not in ("lr",):
        config["embedding_dim"] = 4
    model_config = ExperimentConfig.model_validate(
        {"data": {"format": "synthetic", "features": [{"name": "x", "type": "categorical"}]},
         "model": config}
    ).model  # fmt: skip
    model = build_model(_attention_layout(layout), model_config)
    batch = random_batch(_attention_layout(layout))
    logits = model(batch)
    assert logits.shape[0] == 32 and torch.isfinite(logits).all()
    logits.sum().backward()
    units = [m for m in model.modules() if isinstance(m, TargetAttention)]
    assert units, "no attention unit was built"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in units[0].parameters())


def _data(**hist: Any) -> dict[str, Any]:
    return {
        "format": "synthetic",
        "features": [
            {"name": "item", "type": "categorical"},
            {"name": "cat", "type": "categorical"},
            {"name": "price", "type": "numeric"},
            {"name": "hist", "type": "sequence", "share_embedding": "item", **hist},
        ],
    }


def test_target_config_errors() -> None:
    ok = DataConfig.model_validate(_data(pooling="attention", target="item"))
    assert ok.features[3].pooling == "attention"  # type: ignore[union-attr]
    cases = {
        r"needs target": {"pooling": "attention"},
        r"target 'nope', which is not a feature": {"pooling": "attention", "target": "nope"},
        r"'cat' of 'hist' does not share its table": {"pooling": "attention", "target": "cat"},
        r"'price' of 'hist' is a numeric feature": {"pooling": "attention", "target": "price"},
        r"only pooling: attention uses": {"pooling": "mean", "target": "item"},
    }
    for message, hist in cases.items():
        with pytest.raises(ValidationError, match=message):
            DataConfig.model_validate(_data(**hist))


def test_layout_carries_pooling_through_the_processor() -> None:
    import polars as pl

    from finalmlp.features.processor import FeatureProcessor

    config = DataConfig.model_validate(
        _data(pooling="attention", target="item", attention={"hidden_units": [5], "softmax": True})
    )
    frame = pl.DataFrame({"item": ["a", "b"], "cat": ["x", "y"], "price": [1.0, 2.0],
                          "hist": ["a^b", ""]})  # fmt: skip
    layout = FeatureProcessor(config.features).fit(frame).layout
    assert layout.pooling(0) == Pooling("attention", 0, (5,), "dice", True)
    assert FieldLayout.from_dict(layout.to_dict()) == layout
