"""The model zoo: FM, DNN, Wide&Deep, DeepFM, DCN, DCNv2.

Per model: output shape, a nonzero gradient for every parameter, seeded determinism, the
distinctive part against an explicit formula, config errors, overfitting 2,000 real Frappe rows,
and ONNX export with ONNX Runtime scoring like PyTorch.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from torch.nn import functional

from conftest import SHARED_DATA, random_batch
from finalmlp.batch import Batch
from finalmlp.bundle import load_run
from finalmlp.config import load_config, parse_config
from finalmlp.data.dataset import encode_frame
from finalmlp.errors import ConfigError
from finalmlp.features.processor import FeatureProcessor
from finalmlp.layout import FieldLayout
from finalmlp.models import build_model
from finalmlp.models.base import CTRModel
from finalmlp.models.dcn import DCN, CrossNet
from finalmlp.models.dcnv2 import CrossNetMix, CrossNetV2, DCNv2
from finalmlp.models.deepfm import DeepFM
from finalmlp.models.fm import FactorizationMachine
from finalmlp.models.layers import LinearTerm, pairwise_interactions
from finalmlp.models.widedeep import WideDeep
from finalmlp.schema import (
    DCNConfig,
    DCNv2Config,
    DeepFMConfig,
    DNNConfig,
    FMConfig,
    LowRankMixtureConfig,
    MLPConfig,
    WideDeepConfig,
)
from finalmlp.serve.onnx import OnnxModel, export_onnx, sample_features, torch_probabilities

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
SMALL_MLP = MLPConfig(hidden_units=[16, 8], dropout=0.1, batch_norm=True)
SMALL_DCNV2 = DCNv2Config(embedding_dim=4, num_cross_layers=2, mlp=SMALL_MLP)
CONFIGS: dict[str, Any] = {
    "fm": FMConfig(embedding_dim=4),
    "dnn": DNNConfig(embedding_dim=4, mlp=SMALL_MLP),
    "widedeep": WideDeepConfig(embedding_dim=4, mlp=SMALL_MLP),
    "deepfm": DeepFMConfig(embedding_dim=4, mlp=SMALL_MLP),
    "dcn": DCNConfig(embedding_dim=4, num_cross_layers=2, mlp=SMALL_MLP),
    "dcnv2": SMALL_DCNV2,
    "dcnv2-stacked": SMALL_DCNV2.model_copy(update={"structure": "stacked"}),
    "dcnv2-crossnet-only": SMALL_DCNV2.model_copy(update={"structure": "crossnet_only"}),
    "dcnv2-mixture": SMALL_DCNV2.model_copy(
        update={"low_rank_mixture": LowRankMixtureConfig(low_rank=3, num_experts=2)}
    ),
}


def spread_embeddings(model: CTRModel, std: float = 1.0) -> None:
    """Embeddings start at N(0, 1e-4): widen them so the formulas below are far from 0."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.normal_(std=std)


# ----------------------------------------------------------------------------- every model
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_output_shape_and_every_parameter_gets_a_gradient(name: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS[name])
    batch = random_batch(layout, size=16)
    assert model(batch).shape == (16, 1)  # (B, T): one task
    logits = model(batch)[:, 0]
    assert logits.dtype == torch.float32
    loss = functional.binary_cross_entropy_with_logits(logits, batch.label)
    (loss + model.regularization(0.01, 0.01)).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert param.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_seeded_construction_and_forward_are_deterministic(name: str, layout: FieldLayout) -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(layout, CONFIGS[name]).eval()
        outputs.append(model(random_batch(layout))[:, 0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_reference_initialisation(name: str, layout: FieldLayout) -> None:
    """Linear biases, first-order and cross biases start at 0; embeddings at N(0, 1e-4)."""
    torch.manual_seed(0)
    model = build_model(layout, CONFIGS[name])
    for pname, param in model.named_parameters():
        if pname.endswith("bias"):  # Linear, BatchNorm, first-order, cross and mixture biases
            assert torch.count_nonzero(param) == 0, pname
    table = model.embedding.table.weight
    assert 0.5e-4 < table[table.abs().sum(1) > 0].std() < 2e-4


# ----------------------------------------------------------------------------- FM, DeepFM
def test_pairwise_interactions_equal_the_explicit_double_loop() -> None:
    emb = torch.randn(5, 6, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(5)
    for row in range(5):
        for i in range(6):
            for j in range(i + 1, 6):
                expected[row] += emb[row, i] @ emb[row, j]
    torch.testing.assert_close(pairwise_interactions(emb), expected)


def test_fm_is_bias_plus_weights_plus_pairwise_dot_products(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = FactorizationMachine(layout, FMConfig(embedding_dim=3))
    spread_embeddings(model)
    with torch.no_grad():
        model.linear.bias.fill_(0.7)
    batch = random_batch(layout, size=6)
    emb = model.embedding(batch)  # (B, F, E): 3 categorical, 2 numeric, 1 pooled sequence
    assert emb.shape == (6, layout.num_fields, 3)
    first = model.linear.weights(batch)  # (B, F, 1)
    expected = []
    for row in range(6):
        value = 0.7 + first[row].sum()
        for i in range(layout.num_fields):
            for j in range(i + 1, layout.num_fields):
                value = value + emb[row, i] @ emb[row, j]
        expected.append(value)
    torch.testing.assert_close(model(batch)[:, 0], torch.stack(expected))


def test_linear_term_is_a_sum_of_one_weight_per_value(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    term = LinearTerm(layout, bias=False)
    assert term.bias is None
    spread_embeddings(term)
    batch = random_batch(layout, size=4)
    table, offsets = term.weights.table.weight[:, 0], term.weights.cat_offsets
    assert term.weights.numeric is not None
    numeric_weights = term.weights.numeric.weight[:, 0]
    history_offset = term.weights.seq_offsets[0]
    for row in range(4):
        ids = batch.categorical[row] + offsets
        history = [int(i) for i in batch.sequences[0][row] if i > 0]
        pooled = table[[i + history_offset for i in history]].mean() if history else 0.0
        expected = table[ids].sum() + batch.numeric[row] @ numeric_weights + pooled
        torch.testing.assert_close(term(batch)[row], expected)


def test_deepfm_adds_fm_and_mlp_over_the_same_embeddings(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = DeepFM(layout, CONFIGS["deepfm"]).eval()
    spread_embeddings(model)
    batch = random_batch(layout)
    emb = model.embedding(batch)
    expected = model.linear(batch) + pairwise_interactions(emb) + model.mlp(emb.flatten(1))[:, 0]
    torch.testing.assert_close(model(batch)[:, 0], expected)


def test_widedeep_adds_a_bias_free_wide_part_to_the_deep_logit(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = WideDeep(layout, CONFIGS["widedeep"]).eval()
    spread_embeddings(model)
    assert model.wide.bias is None  # the deep part's output layer carries the bias
    batch = random_batch(layout)
    expected = model.wide(batch) + model.deep(model.embedding(batch).flatten(1))[:, 0]
    torch.testing.assert_close(model(batch)[:, 0], expected)


# ----------------------------------------------------------------------------- DCN
def test_cross_layers_follow_the_dcn_formula() -> None:
    """x_{l+1} = x0 * (x_l . w_l) + b_l + x_l, one row at a time."""
    torch.manual_seed(0)
    net = CrossNet(input_dim=5, num_layers=3)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.normal_()
    x0 = torch.randn(4, 5)
    for row in range(4):
        x = x0[row]
        for layer in net.layers:
            x = x0[row] * (x @ layer.weight.weight[0]) + layer.bias + x
        torch.testing.assert_close(net(x0)[row], x)


def test_dcn_concatenates_cross_and_mlp_outputs(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = DCN(layout, CONFIGS["dcn"]).eval()
    spread_embeddings(model)
    batch = random_batch(layout)
    x0 = model.embedding(batch).flatten(1)
    assert model.output.in_features == x0.shape[1] + 8  # F*E + the MLP's last width
    expected = model.output(torch.cat([model.cross(x0), model.mlp(x0)], dim=1))[:, 0]
    torch.testing.assert_close(model(batch)[:, 0], expected)


def test_dcn_cross_weights_and_biases_are_under_net_l2(layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = DCN(layout, CONFIGS["dcn"])
    cross = sum((p**2).sum() for p in model.cross.parameters())
    without = model.regularization(0.0, 2.0) - cross  # net_l2=2: lambda/2 * ||W||^2 = ||W||^2
    rest = sum(
        (p**2).sum()
        for n, p in model.named_parameters()
        if not n.startswith(("embedding.table", "cross."))
        and n.split(".")[-1] in ("weight", "bias")
    )
    torch.testing.assert_close(without, rest)


# ----------------------------------------------------------------------------- DCNv2
def test_full_rank_cross_layers_follow_the_dcnv2_formula() -> None:
    """x_{l+1} = x0 * (W_l x_l + b_l) + x_l."""
    torch.manual_seed(0)
    net = CrossNetV2(input_dim=5, num_layers=3)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.normal_()
    x0 = torch.randn(4, 5)
    for row in range(4):
        x = x0[row]
        for layer in net.layers:
            x = x0[row] * (layer.weight @ x + layer.bias) + x
        torch.testing.assert_close(net(x0)[row], x)


def test_low_rank_mixture_follows_the_expert_by_expert_formula() -> None:
    """x_{l+1} = sum_k softmax_k(g_k . x_l) x0 * (U_k tanh(C_k tanh(V_k^T x_l)) + b_l) + x_l."""
    torch.manual_seed(0)
    net = CrossNetMix(input_dim=5, num_layers=2, low_rank=3, num_experts=4)
    with torch.no_grad():
        net.layer_bias.normal_()
    x0 = torch.randn(3, 5)
    for row in range(3):
        x = x0[row]
        for layer in range(2):
            gates = torch.softmax(torch.stack([g.weight[0] @ x for g in net.gates]), dim=0)
            mixed = torch.zeros(5)
            for k in range(4):
                low = torch.tanh(net.c[layer, k] @ torch.tanh(net.v[layer, k].t() @ x))
                mixed = mixed + gates[k] * x0[row] * (net.u[layer, k] @ low + net.layer_bias[layer])
            x = x + mixed
        torch.testing.assert_close(net(x0)[row], x)


def test_low_rank_mixture_initialisation_and_regularisation_follow_the_reference(
    layout: FieldLayout,
) -> None:
    torch.manual_seed(0)
    net = CrossNetMix(input_dim=200, num_layers=2, low_rank=16, num_experts=4)
    # xavier-normal of a (K, D, r) block: std sqrt(2 / (D*r + K*r))
    assert net.u.std().item() == pytest.approx((2 / (200 * 16 + 4 * 16)) ** 0.5, rel=0.05)
    assert torch.count_nonzero(net.layer_bias) == 0
    model = DCNv2(layout, CONFIGS["dcnv2-mixture"])
    names = dict(model.named_parameters())
    unpenalised = {"cross.u", "cross.v", "cross.c", "cross.layer_bias"}  # as in the reference
    assert unpenalised <= set(names) and "cross.gates.0.weight" in names
    expected = sum(
        (p**2).sum()
        for n, p in names.items()
        if not n.startswith("embedding.table") and n not in unpenalised
    )
    torch.testing.assert_close(model.regularization(0.0, 2.0), expected)


@pytest.mark.parametrize("structure", ["stacked", "parallel", "crossnet_only"])
def test_dcnv2_structures_wire_cross_and_mlp(structure: str, layout: FieldLayout) -> None:
    torch.manual_seed(0)
    model = DCNv2(layout, SMALL_DCNV2.model_copy(update={"structure": structure})).eval()
    spread_embeddings(model, std=0.3)
    batch = random_batch(layout)
    x0 = model.embedding(batch).flatten(1)  # (B, D)
    crossed = model.cross(x0)
    if structure == "stacked":  # cross, then the MLP on its output
        assert model.mlp is not None and model.output.in_features == 8
        hidden = model.mlp(crossed)
    elif structure == "parallel":  # cross beside the MLP on x0, concatenated
        assert model.mlp is not None and model.output.in_features == x0.shape[1] + 8
        hidden = torch.cat([crossed, model.mlp(x0)], dim=1)
    else:
        assert model.mlp is None and model.output.in_features == x0.shape[1]
        hidden = crossed
    torch.testing.assert_close(model(batch), model.output(hidden))


def test_dcnv2_stacked_and_parallel_differ_with_the_same_weights(layout: FieldLayout) -> None:
    """Same seed, same parameter shapes up to the output layer: only the wiring differs."""
    outputs = {}
    for structure in ("stacked", "parallel"):
        torch.manual_seed(0)
        model = DCNv2(layout, SMALL_DCNV2.model_copy(update={"structure": structure})).eval()
        spread_embeddings(model, std=0.3)
        outputs[structure] = model(random_batch(layout))[:, 0]
    assert not torch.allclose(outputs["stacked"], outputs["parallel"])


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"name": "dcnv2", "structure": "stacked_parallel"},
            r"model\.structure: Input should be 'stacked', 'parallel' or 'crossnet_only'",
        ),
        ({"name": "dcn", "num_cross_layers": 0}, r"model\.num_cross_layers: .*greater than 0"),
        (
            {"name": "dcnv2", "low_rank_mixture": {"low_rank": 0}},
            r"model\.low_rank_mixture\.low_rank: .*greater than 0",
        ),
        (
            {"name": "dcnv2", "low_rank_mixture": {"num_expert": 2}},
            r"unknown key 'model\.low_rank_mixture\.num_expert'; did you mean 'num_experts'\?",
        ),
        ({"name": "deepfm", "mpl": {"hidden_units": [8]}}, r"unknown key 'model\.mpl'; .*'mlp'"),
        ({"name": "dnn", "mlp": {"hidden_units": []}}, r"model\.mlp\.hidden_units: .*at least 1"),
        ({"name": "widedeep", "mlp": {"dropout": 0.1}}, r"missing .*'model\.mlp\.hidden_units'"),
        ({"name": "fm", "embedding_dim": 0}, r"model\.embedding_dim: .*greater than 0"),
        ({"name": "fm", "mlp": {"hidden_units": [8]}}, r"unknown key 'model\.mlp'"),
    ],
)
def test_config_errors(model: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"data": {"recipe": "synthetic"}, "model": model})


@pytest.mark.parametrize("name", ["fm", "dnn", "widedeep", "deepfm", "dcn", "dcnv2"])
def test_configs_parse_by_name_with_bars_frappe_defaults(name: str) -> None:
    config = parse_config({"data": {"recipe": "synthetic"}, "model": {"name": name}})
    assert config.model.name == name and config.model.embedding_dim == 10


@pytest.mark.parametrize(
    "stem", ["fm", "dnn", "widedeep", "deepfm", "dcn", "dcnv2", "dcnv2_stacked"]
)
def test_bars_frappe_config_files_load(stem: str) -> None:
    config = load_config(CONFIG_DIR / f"frappe_x1_{stem}.yaml")
    assert config.model.name == stem.split("_")[0]
    assert config.train.monitor == {"auc": 1.0} and config.train.patience == 2
    if stem.startswith("dcnv2"):
        assert config.model.structure == ("stacked" if stem.endswith("stacked") else "parallel")


# ----------------------------------------------------------------------------- real data
OVERFIT_MLP = MLPConfig(hidden_units=[32, 32], batch_norm=True)
OVERFIT: dict[str, tuple[Any, float]] = {  # config, learning rate
    "fm": (FMConfig(embedding_dim=8), 0.05),
    "dnn": (DNNConfig(embedding_dim=8, mlp=OVERFIT_MLP), 0.01),
    "widedeep": (WideDeepConfig(embedding_dim=8, mlp=OVERFIT_MLP), 0.01),
    "deepfm": (DeepFMConfig(embedding_dim=8, mlp=OVERFIT_MLP), 0.01),
    "dcn": (DCNConfig(embedding_dim=8, num_cross_layers=2, mlp=OVERFIT_MLP), 0.01),
    "dcnv2": (DCNv2Config(embedding_dim=8, num_cross_layers=2, mlp=OVERFIT_MLP), 0.01),
}


@pytest.fixture(scope="module")
def frappe_2000() -> tuple[FieldLayout, Batch]:
    """The first 2,000 rows of Frappe_x1's train.csv, encoded by the project's own pipeline."""
    path = SHARED_DATA / "frappe_x1" / "train.csv"
    if not path.is_file():
        pytest.skip(f"real data file {path} is absent (licensed data is not shipped)")
    config = parse_config({"data": {"recipe": "frappe_x1", "train": str(path)}})
    frame = pl.read_csv(path, n_rows=2_000, infer_schema=False)
    processor = FeatureProcessor(config.data.features).fit(frame)
    split = encode_frame(processor, frame, config.data)
    assert split.label is not None
    features = split.features
    batch = Batch(
        torch.from_numpy(features.categorical),
        torch.from_numpy(features.numeric),
        label=torch.from_numpy(split.label[:, 0]),
    )
    return processor.layout, batch


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Models this small run fastest on one thread, and do not fight other processes for cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(OVERFIT))
@pytest.mark.usefixtures("one_thread")
def test_overfits_2000_frappe_rows(name: str, frappe_2000: tuple[FieldLayout, Batch]) -> None:
    from finalmlp.metrics import roc_auc

    layout, data = frappe_2000
    config, learning_rate = OVERFIT[name]
    torch.manual_seed(0)
    model = build_model(layout, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(10):  # 10 epochs of 8 batches of 250: 80 steps
        for rows in torch.randperm(data.size, generator=generator).split(250):
            batch = Batch(data.categorical[rows], data.numeric[rows], label=data.label[rows])
            assert batch.label is not None
            loss = functional.binary_cross_entropy_with_logits(model(batch)[:, 0], batch.label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = model(data)[:, 0].numpy()
    assert data.label is not None
    auc = roc_auc(data.label.numpy(), scores)
    assert auc > 0.95, f"{name}: train AUC {auc:.4f} after 80 steps"
    assert time.perf_counter() - started < 10  # 0.3-1 s on one core


# ----------------------------------------------------------------------------- ONNX
def _serve_runs() -> Any:
    """tests/serve/serve_runs.py: small run directories holding every input kind."""
    path = Path(__file__).resolve().parents[1] / "serve" / "serve_runs.py"
    spec = importlib.util.spec_from_file_location("zoo_serve_runs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_exports_to_onnx_and_scores_like_torch(name: str, tmp_path: Path) -> None:
    model = CONFIGS[name].model_dump()
    run_dir = _serve_runs().make_run(tmp_path, model)
    result = export_onnx(run_dir)
    assert result.max_abs_diff <= 1e-5
    run = load_run(run_dir)
    features = sample_features(run, 100, seed=7)
    onnx_scores = OnnxModel.from_run(run_dir).predict(features)
    torch_scores = torch_probabilities(run.model, features)
    assert onnx_scores.shape == (100, 1) and torch_scores.std() > 1e-3  # rows score differently
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=0, atol=1e-5)
