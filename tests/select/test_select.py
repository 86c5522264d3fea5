"""finalmlp select end to end on a click log with pure-noise fields: search, prune, retrain,
then the selected run scored (predict), evaluated and served; the one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from fastapi.testclient import TestClient
from select_data import NOISE, SIGNAL, noisy_config, write_noisy_csv
from typer.testing import CliRunner

from finalmlp.bundle import load_run
from finalmlp.cli.main import USER_ERROR_EXIT
from finalmlp.cli.main import app as cli
from finalmlp.config import load_config
from finalmlp.serve.ab import Arm
from finalmlp.serve.app import create_app, load_arms
from finalmlp.serve.settings import ServeSettings

MODELS: dict[str, dict[str, Any]] = {
    "dnn": {"name": "dnn", "embedding_dim": 4, "mlp": {"hidden_units": [32]}},
    "deepfm": {"name": "deepfm", "embedding_dim": 4, "mlp": {"hidden_units": [32]}},
    "finalmlp": {
        "name": "finalmlp",
        "embedding_dim": 4,
        "mlp1": {"hidden_units": [32]},
        "mlp2": {"hidden_units": [16]},
        "fs_hidden_units": [16],
        "fs1_context": ["n0"],  # a noise field: dropped, so gate 1 becomes context-free
        "fs2_context": ["s0"],
        "num_heads": 2,
    },
}
DROPPED = {*NOISE, "x_noise"}


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_noisy_csv(tmp_path_factory.mktemp("noisy") / "clicks.csv")


def write_config(folder: Path, data: Path, model: str, **select: Any) -> Path:
    raw = noisy_config(data, folder / "cache", MODELS[model], mask_learning_rate=0.05, **select)
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def run_select(config: Path, out: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["select", str(config), "--out", str(out), *args])


@pytest.mark.parametrize("model", ["finalmlp", "deepfm", "dnn"])
def test_field_level_drops_the_noise_fields(noisy: Path, tmp_path: Path, model: str) -> None:
    out = tmp_path / "run"
    result = run_select(
        write_config(tmp_path, noisy, model),
        out,
        "--level",
        "field",
        "--keep-fraction",
        "0.5",
        "--no-report",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "selection.json").read_text())
    assert set(report["dropped_fields"]) == DROPPED
    assert report["kept_fraction"] == 0.5
    assert report["parameters"]["selected"] < report["parameters"]["full"]
    assert report["bundle_bytes"]["selected"] < report["bundle_bytes"]["full"]
    # the selected model is as good as the full one on this data (noise only hurts)
    full, chosen = report["metrics"]["full"]["test"], report["metrics"]["selected"]["test"]
    assert chosen["auc"] > full["auc"] - 0.02 and chosen["auc"] > 0.8
    assert "kept 50.0% of the field gates (budget 50%)" in result.output
    run = load_run(out)
    assert run.config.data.feature_names == [*SIGNAL, "x_signal"]
    assert run.processor.columns == [*SIGNAL, "x_signal"]
    if model == "finalmlp":
        assert run.config.model.fs1_context == [] and run.config.model.fs2_context == ["s0"]
        assert "gate is now context-free" in result.output
    selected = load_config(out / "selected.yaml")
    assert selected.data.feature_names == run.config.data.feature_names
    assert selected.model == run.config.model


def test_value_level_end_to_end_predict_evaluate_serve(noisy: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = write_config(tmp_path, noisy, "finalmlp")
    result = run_select(config, out, "--keep-fraction", "0.25")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "selection.json").read_text())
    rows = {row["field"]: row for row in report["fields"]}
    assert abs(report["kept_fraction"] - 0.25) <= 0.1
    for which in ("full", "selected"):  # both models' served-score checks are kept
        check = report["probability_check"][which]["tasks"]["label"]
        assert 0.0 <= check["ece"] <= 1.0 and check["logloss"] > 0
    for name in SIGNAL:  # strong fields keep most of their values
        assert rows[name]["kept"] >= rows[name]["total"] // 2
    assert not rows["x_signal"]["dropped"] and rows["x_noise"]["dropped"]
    noise_kept = sum(rows[n]["kept"] for n in NOISE) / sum(rows[n]["total"] for n in NOISE)
    assert noise_kept <= 0.2, report["fields"]
    # the pruned vocabularies are the kept values (plus padding and OOV)
    run = load_run(out)
    for name in SIGNAL:
        assert run.processor.tables_[name].size == rows[name]["kept"] + 2
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Feature selection" in page and 'alt="kept fraction per field"' in page
    # scored from the raw file (its dropped columns are ignored), and evaluated
    scores = tmp_path / "scores.csv"
    predicted = CliRunner().invoke(
        cli, ["predict", str(out), "--input", str(noisy), "--output", str(scores)]
    )
    assert predicted.exit_code == 0, predicted.output
    assert pl.read_csv(scores).height == pl.read_csv(noisy).height
    evaluated = CliRunner().invoke(cli, ["evaluate", str(out), "--data", str(noisy), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["auc"] > 0.8
    # served: records of the kept fields only
    client = TestClient(create_app(load_arms([Arm("default", out)]), ServeSettings()))
    records = pl.read_csv(noisy).head(20).select([*run.processor.columns]).to_dicts()
    response = client.post("/v1/predict", json={"records": records})
    assert response.status_code == 200, response.text
    served = np.array(response.json()["predictions"])
    from finalmlp.serve.scorer import Scorer

    np.testing.assert_allclose(
        served, Scorer.from_path(out).score_records(records)[:, 0], rtol=1e-6
    )
    dropped = client.post("/v1/predict", json={"records": [{**records[0], "x_noise": 0.5}]})
    assert dropped.status_code == 422 and "x_noise" in dropped.text


def test_remapped_encoding_equals_the_pruned_processor(noisy: Path) -> None:
    """Dropped values are OOV: re-encoding raw rows with the pruned processor gives exactly
    the remapped ids the retraining used."""
    from finalmlp.config import parse_config
    from finalmlp.data.dataset import prepare_data
    from finalmlp.select.gates import Gates
    from finalmlp.select.prune import binarize, remap_data

    folder = noisy.parent
    config = parse_config(noisy_config(noisy, folder / "cache", MODELS["dnn"]))
    data = prepare_data(config.data, cache=False)
    gates = Gates(data.processor.layout, "value", 0.5)
    generator = np.random.default_rng(0)
    with np.errstate(all="ignore"):
        gates.mask.data[:] = gates.mask.data.new_tensor(generator.normal(0, 1, gates.num_gates))
    selection = binarize(gates, data.processor)
    pruned = remap_data(data, data.processor, selection)
    frame = pl.read_csv(noisy)
    full = data.processor.transform(frame)
    direct = pruned.processor.transform(frame)
    # the same rows through the remapping path
    from finalmlp.data.dataset import PreparedData
    from finalmlp.data.split import EncodedSplit

    again = remap_data(
        PreparedData(data.processor, {"all": EncodedSplit(full, None)}, False, 0.0),
        data.processor,
        selection,
    )
    np.testing.assert_array_equal(again.splits["all"].features.categorical, direct.categorical)
    np.testing.assert_array_equal(again.splits["all"].features.numeric, direct.numeric)
    assert pruned.processor.layout == direct_layout(pruned)


def direct_layout(data: Any) -> Any:
    return data.processor.layout


# ----------------------------------------------------------------------------- errors
def one_error_line(result: Any) -> str:
    assert result.exit_code == USER_ERROR_EXIT, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.2"])
def test_a_budget_outside_0_1_is_one_line(noisy: Path, tmp_path: Path, fraction: str) -> None:
    config = write_config(tmp_path, noisy, "dnn")
    line = one_error_line(run_select(config, tmp_path / "run", "--keep-fraction", fraction))
    assert "--keep-fraction must be in (0, 1]" in line


def test_a_selection_dropping_every_field_is_one_line(noisy: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, noisy, "dnn", sparsity=10.0, level="field")
    line = one_error_line(run_select(config, tmp_path / "run"))
    assert "dropped every field" in line and not (tmp_path / "run").exists()


def test_a_model_without_a_field_embedding_is_one_line(
    noisy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from finalmlp import models
    from finalmlp.models.base import CTRModel

    class Constant(CTRModel):
        def __init__(self, layout: Any, config: Any) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(1))

        def forward(self, batch: Any) -> torch.Tensor:
            return self.bias.expand(batch.size, 1)

    monkeypatch.setitem(models.MODELS, "dnn", Constant)
    line = one_error_line(run_select(write_config(tmp_path, noisy, "dnn"), tmp_path / "run"))
    assert "has no field embedding (FeatureEmbedding) to gate" in line


def test_several_tasks_are_refused(noisy: Path, tmp_path: Path) -> None:
    raw = noisy_config(noisy, tmp_path / "cache", MODELS["finalmlp"])
    raw["data"]["labels"] = [{"name": "a", "column": "label"}, {"name": "b", "column": "label"}]
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    line = one_error_line(run_select(path, tmp_path / "run"))
    assert "finalmlp select searches one task" in line


# ----------------------------------------------------------------------------- real data
def test_census_income_field_selection(shared_data: Path, tmp_path: Path) -> None:
    """The income task of Census-Income (39 fields): a field-level search with a budget."""
    raw = {
        "data": {
            "recipe": "census_income",
            "train": str(shared_data / "census_income_kdd" / "census-income.test.gz"),
            "labels": ["income"],
            "cache_dir": str(tmp_path / "cache"),
        },
        "model": {"name": "dnn", "embedding_dim": 8, "mlp": {"hidden_units": [64]}},
        "train": {"batch_size": 2048, "max_epochs": 2, "progress": False},
        "select": {
            "epochs": 3,
            "final_temperature": 50,
            "mask_learning_rate": 0.05,
            "budget_searches": 6,
            "budget_tolerance": 0.15,
        },
    }
    path = tmp_path / "census.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = tmp_path / "run"
    result = run_select(path, out, "--level", "field", "--keep-fraction", "0.5", "--no-report")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "selection.json").read_text())
    assert len(report["fields"]) == len(load_config(path).data.features) == 39
    assert 0.25 <= report["kept_fraction"] <= 0.75
    assert report["metrics"]["selected"]["test"]["auc"] > 0.9
    assert report["parameters"]["selected"] < report["parameters"]["full"]
