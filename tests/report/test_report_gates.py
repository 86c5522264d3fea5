"""Mean gate per field and stream, and the gate plot's bars (one per field per stream)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.container import BarContainer

from conftest import random_batch
from finalmlp.data.dataset import EncodedSplit
from finalmlp.features.processor import EncodedFeatures
from finalmlp.layout import FieldLayout
from finalmlp.models import build_model
from finalmlp.models.finalmlp import FinalMLP
from finalmlp.report.gates import mean_gates
from finalmlp.report.plots import gates_figure
from finalmlp.schema import DualMLPConfig, FinalMLPConfig, LRConfig

SMALL = {"embedding_dim": 4, "mlp1": {"hidden_units": [8]}, "mlp2": {"hidden_units": [8]}}


def _split(layout: FieldLayout, rows: int = 40) -> EncodedSplit:
    batch = random_batch(layout, size=rows, seed=1)
    features = EncodedFeatures(
        batch.categorical.numpy(),
        batch.numeric.numpy(),
        tuple(s.numpy() for s in batch.sequences),
    )
    assert batch.label is not None
    return EncodedSplit(features, batch.label.numpy())


def _finalmlp(layout: FieldLayout, **options: object) -> FinalMLP:
    config = FinalMLPConfig.model_validate({**SMALL, "fs_hidden_units": [8], **options})
    torch.manual_seed(0)
    model = FinalMLP(layout, config)
    with torch.no_grad():  # trained-looking gates: away from the all-ones start
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


def test_mean_gates_average_rows_and_embedding_columns(layout: FieldLayout) -> None:
    model = _finalmlp(layout, fs1_context=["user"], fs2_context=[])
    split = _split(layout)
    gates = mean_gates(model, split, layout, batch_size=16)  # several batches, a short last one
    assert list(gates) == ["stream 1 (context: user)", "stream 2 (context: none)"]
    with torch.no_grad():
        gate1, gate2 = model.gates(random_batch(layout, size=40, seed=1))
    expected1 = gate1.double().view(40, layout.num_fields, -1).mean(dim=(0, 2)).numpy()
    expected2 = gate2.double().view(layout.num_fields, -1).mean(dim=1).numpy()  # (1, F*E)
    np.testing.assert_allclose(gates["stream 1 (context: user)"], expected1, rtol=1e-6)
    np.testing.assert_allclose(gates["stream 2 (context: none)"], expected2, rtol=1e-6)
    for values in gates.values():
        assert values.shape == (layout.num_fields,) and np.all((values > 0) & (values < 2))


@pytest.mark.parametrize(
    "config",
    [
        FinalMLPConfig.model_validate({**SMALL, "use_fs": False}),
        DualMLPConfig.model_validate({"name": "dualmlp", **SMALL}),
        LRConfig(),
    ],
    ids=["finalmlp-without-gates", "dualmlp", "lr"],
)
def test_models_without_gates_have_no_gate_values(layout: FieldLayout, config: object) -> None:
    model = build_model(layout, config)  # type: ignore[arg-type]
    assert mean_gates(model, _split(layout), layout) == {}


def test_gate_plot_has_one_bar_per_field_for_each_stream(layout: FieldLayout) -> None:
    model = _finalmlp(layout, fs1_context=["user"], fs2_context=["item"])
    gates = mean_gates(model, _split(layout), layout)
    figure = gates_figure(layout.field_names, gates)
    axes = figure.axes[0]
    containers = [c for c in axes.containers if isinstance(c, BarContainer)]
    assert len(containers) == len(gates) == 2
    for container, (name, values) in zip(containers, gates.items(), strict=True):
        assert len(container) == layout.num_fields  # one bar per field
        np.testing.assert_allclose([bar.get_height() for bar in container], values)
        assert container.get_label() == name
    labels = [tick.get_text() for tick in axes.get_xticklabels()]
    assert labels == list(layout.field_names)


def test_gate_plot_legend_covers_no_bar() -> None:
    # Gates near their maximum in every field: a legend inside the bars' height covered some.
    fields = [f"field{i}" for i in range(10)]
    gates = {
        "stream 1": np.linspace(1.6, 1.95, 10),
        "stream 2": np.linspace(1.95, 1.6, 10),
    }
    figure = gates_figure(fields, gates)
    figure.canvas.draw()
    axes = figure.axes[0]
    legend = axes.get_legend().get_window_extent()
    bars = [bar for c in axes.containers if isinstance(c, BarContainer) for bar in c]
    assert len(bars) == 20
    assert not any(legend.overlaps(bar.get_window_extent()) for bar in bars)
