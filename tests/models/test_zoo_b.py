"""Model zoo B: xDeepFM, AutoInt+, FinalNet (1B and 2B).

Shapes, gradients to every parameter, determinism, each model's distinctive math against an
explicit formula (a CIN layer, an attention layer, FINAL layers and FinalNet's
self-distillation), config errors, overfitting 2,000 real Frappe rows, and ONNX export parity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional

from conftest import random_batch
from finalmlp.batch import Batch
from finalmlp.bundle import load_run, save_run
from finalmlp.config import parse_config
from finalmlp.data.recipes import apply_recipe
from finalmlp.errors import ConfigError
from finalmlp.features.processor import EncodedFeatures, FeatureProcessor
from finalmlp.layout import FieldLayout
from finalmlp.metrics import roc_auc
from finalmlp.models import build_model
from finalmlp.models.autoint import AutoInt, MultiHeadSelfAttention
from finalmlp.models.finalnet import FactorizedInteraction, FinalNet
from finalmlp.models.xdeepfm import CompressedInteractionNetwork, XDeepFM
from finalmlp.schema import (
    AutoIntConfig,
    DataConfig,
    FinalNetConfig,
    MLPConfig,
    StrictModel,
    XDeepFMConfig,
)
from finalmlp.serve.onnx import OnnxModel, export_onnx, sample_features, torch_probabilities

SMALL: dict[str, XDeepFMConfig | AutoIntConfig | FinalNetConfig] = {
    "xdeepfm": XDeepFMConfig(
        embedding_dim=4,
        cin_hidden_units=[6, 4],
        mlp=MLPConfig(hidden_units=[16, 8], dropout=0.1, batch_norm=True),
    ),
    "autoint": AutoIntConfig(
        embedding_dim=4,
        num_layers=2,
        attention_dim=8,
        num_heads=2,
        attention_dropout=0.1,
        use_wide=True,
        mlp=MLPConfig(hidden_units=[16], dropout=0.1, batch_norm=True),
    ),
    "finalnet_2b": FinalNetConfig(
        embedding_dim=4,
        block1=MLPConfig(hidden_units=[16, 8], dropout=0.1, batch_norm=True),
        block2=MLPConfig(hidden_units=[8], batch_norm=True),
    ),
    "finalnet_1b": FinalNetConfig(
        embedding_dim=4,
        block_type="1B",
        block1=MLPConfig(hidden_units=[12, 6], batch_norm=True),
        residual_type="sum",
    ),
}
NAMES = sorted(SMALL)


def _loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The trainer's training loss: BCE on the returned logits plus the model's extra term."""
    assert batch.label is not None
    logits = model(batch)  # (B, 1)
    loss = functional.binary_cross_entropy_with_logits(logits[:, 0], batch.label)
    extra = model.auxiliary_loss(logits, batch.label.unsqueeze(-1))
    return loss if extra is None else loss + extra


# ----------------------------------------------------------------------------- all models
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_every_parameter_gets_a_gradient(name: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, SMALL[name])
    batch = random_batch(layout, size=16)
    assert model(batch).shape == (16, 1)  # (B, T): one task
    (_loss(model, batch) + model.regularization(0.01, 0.01)).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert param.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("name", NAMES)
def test_seeded_construction_and_forward_are_deterministic(name: str, layout: FieldLayout) -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(layout, SMALL[name])
        batch = random_batch(layout)
        # dropout on, then off
        outputs.append(torch.cat([model(batch)[:, 0], model.eval()(batch)[:, 0]]))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_reference_initialisation(name: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, SMALL[name])
    for mname, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv1d) and not mname.startswith("gate"):
            fan_in, fan_out = module.weight.shape[1], module.weight.shape[0]
            std = math.sqrt(2.0 / (fan_in + fan_out))  # xavier-normal (kernel size 1)
            if module.weight.numel() >= 32:  # enough draws to estimate the spread
                assert 0.6 * std < module.weight.std() < 1.4 * std, mname
            assert module.bias is None or torch.count_nonzero(module.bias) == 0, mname


def test_models_are_registered_and_configs_parse() -> None:
    data = {"train": "t.csv", "features": [{"name": "user", "type": "categorical"}]}
    for name, model in [("xdeepfm", XDeepFM), ("autoint", AutoInt), ("finalnet", FinalNet)]:
        cfg = parse_config({"data": data, "model": {"name": name}})
        assert cfg.model.name == name
        layout = FieldLayout((5,), ("user",), (0,), ())
        assert isinstance(build_model(layout, cfg.model), model)
    cfg = parse_config({"data": data, "model": {"name": "autoint", "mlp": None}})
    assert isinstance(cfg.model, AutoIntConfig) and cfg.model.mlp is None


# ----------------------------------------------------------------------------- xDeepFM
def test_cin_layers_match_explicit_outer_product_loops() -> None:
    torch.manual_seed(0)
    num_fields, dim = 3, 4
    cin = CompressedInteractionNetwork(num_fields, [5, 2])
    with torch.no_grad():
        for conv in cin.layers:
            conv.bias.normal_()
    x0 = torch.randn(2, num_fields, dim)
    expected_pooled, previous = [], x0
    for conv in cin.layers:
        weight, bias = conv.weight[..., 0], conv.bias  # (H', F*H), (H',)
        width = previous.shape[1]
        maps = torch.zeros(2, weight.shape[0], dim)
        for h in range(weight.shape[0]):
            maps[:, h] = bias[h]
            for i in range(num_fields):  # X^k_h = sum_ij W_{h,ij} X^0_i o X^{k-1}_j + b_h
                for j in range(width):
                    maps[:, h] += weight[h, i * width + j] * x0[:, i] * previous[:, j]
        expected_pooled.append(maps.sum(dim=-1))
        previous = maps
    pooled = torch.cat(expected_pooled, dim=1)  # (2, 5 + 2)
    expected = pooled @ cin.output.weight[0] + cin.output.bias
    torch.testing.assert_close(cin(x0), expected)


def test_xdeepfm_sums_linear_cin_and_dnn_logits(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = XDeepFM(layout, SMALL["xdeepfm"]).eval()
    batch = random_batch(layout)
    embedded = model.embedding(batch)
    assert model.dnn is not None
    expected = (
        model.linear(batch).sum(dim=(1, 2))
        + model.cin(embedded)
        + model.dnn(embedded.flatten(1)).squeeze(-1)
    )
    torch.testing.assert_close(model(batch)[:, 0], expected)
    cin_only = XDeepFM(layout, SMALL["xdeepfm"].model_copy(update={"mlp": None}))
    assert cin_only.dnn is None and cin_only(batch)[:, 0].shape == (32,)


# ----------------------------------------------------------------------------- AutoInt+
@pytest.mark.parametrize(
    ("input_dim", "use_scale", "layer_norm"), [(4, True, False), (6, False, True)]
)
def test_attention_layer_matches_explicit_softmax_formula(
    input_dim: int, use_scale: bool, layer_norm: bool
) -> None:
    torch.manual_seed(0)
    heads, head_dim = 2, 3
    layer = MultiHeadSelfAttention(
        input_dim, heads * head_dim, heads, use_scale=use_scale, layer_norm=layer_norm
    ).eval()
    if layer.norm is not None:
        with torch.no_grad():
            layer.norm.weight.normal_()
            layer.norm.bias.normal_()
    x = torch.randn(2, 5, input_dim)  # (B, F, input_dim)
    outputs = []
    for h in range(heads):
        rows = slice(h * head_dim, (h + 1) * head_dim)
        q, k, v = (x @ proj.weight[rows].T for proj in (layer.query, layer.key, layer.value))
        scores = q @ k.transpose(1, 2) / (math.sqrt(head_dim) if use_scale else 1.0)
        weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)  # softmax over fields
        outputs.append(weights @ v)
    out = torch.cat(outputs, dim=-1)
    out = out + (x if layer.residual is None else x @ layer.residual.weight.T)
    assert (layer.residual is None) == (input_dim == heads * head_dim)
    if layer.norm is not None:
        mean, var = out.mean(-1, keepdim=True), out.var(-1, unbiased=False, keepdim=True)
        out = (out - mean) / torch.sqrt(var + layer.norm.eps) * layer.norm.weight + layer.norm.bias
    torch.testing.assert_close(layer(x), out.relu())


def test_autoint_sums_attention_dnn_and_wide_logits(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = AutoInt(layout, SMALL["autoint"]).eval()
    batch = random_batch(layout)
    embedded = model.embedding(batch)
    assert model.dnn is not None and model.wide is not None
    expected = (
        model.output(model.attention(embedded).flatten(1)).squeeze(-1)
        + model.dnn(embedded.flatten(1)).squeeze(-1)
        + model.wide(batch).sum(dim=(1, 2))
    )
    torch.testing.assert_close(model(batch)[:, 0], expected)


# ----------------------------------------------------------------------------- FinalNet
@pytest.mark.parametrize("residual_type", ["concat", "sum"])
def test_final_layer_matches_explicit_formula(residual_type: str) -> None:
    torch.manual_seed(0)
    layer = FactorizedInteraction(5, 4, residual_type)
    x = torch.randn(3, 5)
    h = x @ layer.linear.weight.T + layer.linear.bias
    half = h.shape[1] // 2
    a, b = h[:, :half], h[:, half:]
    expected = torch.cat([a, a * b], dim=1) if residual_type == "concat" else a + a * b
    torch.testing.assert_close(layer(x), expected)
    assert layer(x).shape == (3, 4)


def test_finalnet_feature_gate_starts_at_one(layout: FieldLayout) -> None:
    model = FinalNet(layout, SMALL["finalnet_2b"])
    assert model.gate is not None
    embedded = torch.randn(2, layout.num_fields, 4)
    torch.testing.assert_close(model.gate(embedded), torch.cat([embedded, embedded], dim=1))


def test_finalnet_2b_self_distillation_matches_explicit_formula(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = FinalNet(layout, SMALL["finalnet_2b"]).train()
    batch = random_batch(layout, size=16)
    assert batch.label is not None
    logits = model(batch)  # (B, 1)
    assert model.block_logits is not None
    logit1, logit2 = model.block_logits
    logit1.retain_grad()
    logit2.retain_grad()
    torch.testing.assert_close(logits, 0.5 * (logit1 + logit2))  # the mean of the logits
    aux = model.auxiliary_loss(logits, batch.label)
    assert aux is not None and model.block_logits is None  # used once, then dropped
    target = torch.sigmoid(0.5 * (logit1 + logit2)).detach()

    def bce(prob: torch.Tensor) -> torch.Tensor:
        return -(target * prob.log() + (1 - target) * (1 - prob).log()).mean()

    expected = bce(torch.sigmoid(logit1)) + bce(torch.sigmoid(logit2))
    torch.testing.assert_close(aux, expected)
    aux.backward()  # the target is detached: d aux / d l_k = (s(l_k) - t) / B
    assert logit1.grad is not None and logit2.grad is not None
    torch.testing.assert_close(logit1.grad, (torch.sigmoid(logit1) - target).detach() / 16)
    torch.testing.assert_close(logit2.grad, (torch.sigmoid(logit2) - target).detach() / 16)
    assert model.auxiliary_loss(logits, batch.label) is None  # no second use


def test_finalnet_2b_auxiliary_loss_reaches_both_blocks(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = FinalNet(layout, SMALL["finalnet_2b"]).train()
    batch = random_batch(layout, size=16)
    assert batch.label is not None
    aux = model.auxiliary_loss(model(batch), batch.label.unsqueeze(-1))
    assert aux is not None
    aux.backward()
    for prefix in ("embedding.", "gate.", "block1.", "output1.", "block2.", "output2."):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix


def test_finalnet_eval_forward_returns_the_ensemble_only(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = FinalNet(layout, SMALL["finalnet_2b"]).eval()
    batch = random_batch(layout)
    assert batch.label is not None
    logits = model(batch)[:, 0]
    assert model.block_logits is None
    assert model.auxiliary_loss(logits, batch.label) is None
    assert model.gate is not None and model.block2 is not None and model.output2 is not None
    embedded = model.embedding(batch)
    logit1 = model.output1(model.block1(model.gate(embedded).flatten(1))).squeeze(-1)
    logit2 = model.output2(model.block2(embedded.flatten(1))).squeeze(-1)
    torch.testing.assert_close(logits, 0.5 * (logit1 + logit2))


def test_finalnet_1b_is_block1_alone_without_auxiliary_loss(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = FinalNet(layout, SMALL["finalnet_1b"]).train()
    assert model.block2 is None and model.output2 is None and model.gate is not None
    batch = random_batch(layout)
    assert batch.label is not None
    logits = model(batch)[:, 0]
    assert model.auxiliary_loss(logits, batch.label) is None
    model.eval()
    gated = model.gate(model.embedding(batch)).flatten(1)
    torch.testing.assert_close(model(batch), model.output1(model.block1(gated)))


# ----------------------------------------------------------------------------- config errors
ODD = MLPConfig(hidden_units=[400, 7])
CONFIG_ERRORS = [
    (AutoIntConfig, {"attention_dim": 10, "num_heads": 4},
     r"num_heads=4 must divide attention_dim=10; pick one of \[1, 2, 5, 10\]"),
    (AutoIntConfig, {"num_layers": 0}, r"num_layers\n  Input should be greater than 0"),
    (AutoIntConfig, {"attention_dropout": 1.0}, r"attention_dropout\n  Input should be less than"),
    (XDeepFMConfig, {"cin_hidden_units": []}, r"cin_hidden_units\n  List should have at least 1"),
    (XDeepFMConfig, {"cin_hidden_units": [8, 0]}, r"cin_hidden_units.1\n  Input should be greater"),
    (FinalNetConfig, {"block1": ODD}, r"block1.hidden_units has odd widths \[7\]; residual_type"),
    (FinalNetConfig, {"block2": ODD}, r"block2.hidden_units has odd widths \[7\]"),
    (FinalNetConfig, {"block_type": "3B"}, r"Input should be '1B' or '2B'"),
    (FinalNetConfig, {"residual_type": "product"}, r"Input should be 'concat' or 'sum'"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "fields", "message"), CONFIG_ERRORS)
def test_config_errors(config: type[StrictModel], fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**fields)


def test_odd_widths_are_fine_with_sum_residual_and_in_block2_unused_by_1b() -> None:
    FinalNetConfig(block1=MLPConfig(hidden_units=[7]), residual_type="sum")
    FinalNetConfig(block_type="1B", block2=MLPConfig(hidden_units=[9]))


@pytest.mark.parametrize("name", NAMES)
def test_configs_survive_a_json_round_trip(name: str) -> None:
    config = SMALL[name]  # as a run directory stores and reloads it (every field written)
    assert type(config).model_validate_json(config.model_dump_json()) == config


def test_config_errors_from_a_file_name_the_key() -> None:
    data = {"train": "t.csv", "features": [{"name": "user", "type": "categorical"}]}
    model = {"name": "autoint", "attention_dim": 12, "num_heads": 5}
    with pytest.raises(ConfigError, match=r"model: num_heads=5 must divide"):
        parse_config({"data": data, "model": model})
    with pytest.raises(
        ConfigError, match=r"unknown key 'model\.cin_units'; did you mean 'cin_hidden_units'"
    ):
        parse_config({"data": data, "model": {"name": "xdeepfm", "cin_units": [8]}})


def test_layers_refuse_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="num_heads=3 must divide attention_dim=8"):
        MultiHeadSelfAttention(4, 8, num_heads=3)
    with pytest.raises(ConfigError, match="'concat' needs an even width, got 5"):
        FactorizedInteraction(4, 5, "concat")


# ----------------------------------------------------------------------------- real data
OVERFIT: dict[str, XDeepFMConfig | AutoIntConfig | FinalNetConfig] = {
    "xdeepfm": XDeepFMConfig(
        embedding_dim=8, cin_hidden_units=[8], mlp=MLPConfig(hidden_units=[32], batch_norm=True)
    ),
    "autoint": AutoIntConfig(
        embedding_dim=8,
        num_layers=1,
        attention_dim=8,
        num_heads=2,
        attention_dropout=0.0,
        mlp=MLPConfig(hidden_units=[32], batch_norm=True),
    ),
    "finalnet_1b": FinalNetConfig(
        embedding_dim=8, block_type="1B", block1=MLPConfig(hidden_units=[32], batch_norm=True)
    ),
    "finalnet_2b": FinalNetConfig(
        embedding_dim=8,
        block1=MLPConfig(hidden_units=[32], batch_norm=True),
        block2=MLPConfig(hidden_units=[32], batch_norm=True),
    ),
}


@pytest.fixture(scope="module")
def frappe_rows() -> tuple[FieldLayout, EncodedFeatures, np.ndarray]:
    """The first 2,000 rows of Frappe_x1 train, encoded (skipped when the data is absent)."""
    from conftest import SHARED_DATA

    path = SHARED_DATA / "frappe_x1" / "train.csv"
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent (licensed data is not shipped)")
    frame = pl.read_csv(path, infer_schema=False, n_rows=2000)
    data = DataConfig.model_validate(apply_recipe({"recipe": "frappe_x1", "train": path}))
    processor = FeatureProcessor(data.features).fit(frame)
    labels = frame["label"].cast(pl.Float32).to_numpy()
    return processor.layout, processor.transform(frame), labels


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small batches on a shared 2-core machine: extra intra-op threads only spin (10-30x)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(OVERFIT))
def test_overfits_2000_frappe_rows(
    name: str, frappe_rows: tuple[FieldLayout, EncodedFeatures, np.ndarray], one_thread: None
) -> None:
    layout, features, labels = frappe_rows
    torch.manual_seed(0)
    model = build_model(layout, OVERFIT[name])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    categorical = torch.from_numpy(features.categorical)
    numeric, label = torch.from_numpy(features.numeric), torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):  # 15 epochs of 4 batches: 60 steps
        for rows in torch.randperm(len(label), generator=generator).split(500):
            batch = Batch(categorical[rows], numeric[rows], (), label[rows])
            optimizer.zero_grad()
            _loss(model, batch).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = model(Batch(categorical, numeric, (), label))[:, 0].numpy()
    assert roc_auc(labels, scores) > 0.95


# ----------------------------------------------------------------------------- ONNX export
ONNX_MODELS = {
    "xdeepfm": {"name": "xdeepfm", "embedding_dim": 4, "cin_hidden_units": [4, 3],
                "mlp": {"hidden_units": [8], "batch_norm": True}},
    "autoint": {"name": "autoint", "embedding_dim": 4, "num_layers": 2, "attention_dim": 6,
                "num_heads": 3, "use_wide": True, "mlp": {"hidden_units": [8], "batch_norm": True}},
    "finalnet_2b": {"name": "finalnet", "embedding_dim": 4,
                    "block1": {"hidden_units": [8, 4], "batch_norm": True},
                    "block2": {"hidden_units": [6], "batch_norm": True}},
    "finalnet_1b": {"name": "finalnet", "embedding_dim": 4, "block_type": "1B",
                    "block1": {"hidden_units": [6], "batch_norm": True}, "residual_type": "sum",
                    "use_feature_gating": False},
}  # fmt: skip
FEATURES = [
    {"name": "user", "type": "categorical"},
    {"name": "item", "type": "categorical"},
    {"name": "price", "type": "numeric"},
    {"name": "history", "type": "sequence", "max_len": 3},
]


def _tiny_run(folder: Path, model: dict) -> Path:
    """A run directory with every input kind; weights drawn with a spread so scores vary."""
    rng = np.random.default_rng(0)
    frame = pl.DataFrame(
        {
            "label": rng.integers(0, 2, 100).astype(str),
            "user": [f"u{i}" for i in rng.integers(0, 9, 100)],
            "item": [f"i{i}" for i in rng.integers(0, 7, 100)],
            "price": [f"{x:.2f}" for x in rng.normal(size=100)],
            "history": ["^".join(f"h{j}" for j in rng.integers(0, 6, 2)) for _ in range(100)],
        }
    )
    frame.write_csv(folder / "train.csv")
    config = parse_config(
        {"data": {"train": str(folder / "train.csv"), "features": FEATURES}, "model": model}
    )
    processor = FeatureProcessor(config.data.features).fit(frame)
    torch.manual_seed(0)
    net = build_model(processor.layout, config.model)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.normal_(std=0.7)
            if isinstance(module, torch.nn.BatchNorm1d):
                assert module.running_mean is not None and module.running_var is not None
                module.running_mean.normal_(std=0.2)
                module.running_var.uniform_(0.5, 1.5)
    save_run(folder / "run", config, processor, net.eval(), {})
    return folder / "run"


@pytest.mark.parametrize("name", sorted(ONNX_MODELS))
def test_exports_to_onnx_with_parity(name: str, tmp_path: Path) -> None:
    run_dir = _tiny_run(tmp_path, ONNX_MODELS[name])
    result = export_onnx(run_dir)  # checks 257 random rows itself (1e-5)
    assert result.max_abs_diff < 1e-5
    run = load_run(run_dir)
    rows = sample_features(run, 61, seed=3)
    expected = torch_probabilities(run.model, rows)
    assert expected.std() > 0.02  # not a constant model
    for batch_size in (1, 7, 61):
        scores = OnnxModel.from_run(run_dir).predict(rows, batch_size)
        np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
