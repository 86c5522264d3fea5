"""Two tasks from raw file to every output: train, predict, serve, ONNX parity and the report.

On Census-Income (KDD) (the MMoE paper's income / never-married set; skipped without
``../shared``) and on its synthetic twin (click and conversion from the built-in generator),
which always runs.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from finalmlp.bundle import load_run
from finalmlp.config import parse_config
from finalmlp.data.recipes import CENSUS_COLUMNS, CENSUS_COUNTS, CENSUS_MONEY
from finalmlp.report import write_report
from finalmlp.serve.batch import score_file
from finalmlp.serve.onnx import OnnxModel, export_onnx, sample_features, torch_probabilities
from finalmlp.train.run import train_from_config

SMALL_MMOE = {
    "name": "mmoe",
    "embedding_dim": 8,
    "num_experts": 3,
    "expert": {"hidden_units": [32]},
    "tower": {"hidden_units": [16]},
}
TRAIN = {"batch_size": 1024, "max_epochs": 1, "progress": False, "learning_rate": 3e-3}


def census_config(shared_data: Path, tmp_path: Path) -> dict[str, Any]:
    source = shared_data / "census_income_kdd" / "census-income.test.gz"
    return {
        "data": {"recipe": "census_income", "train": str(source), "cache_dir": str(tmp_path)},
        "model": SMALL_MMOE,
        "train": TRAIN,
    }


def synthetic_config(tmp_path: Path) -> dict[str, Any]:
    options = {"num_rows": 8000, "num_categorical": 4, "num_numeric": 2, "seed": 5}
    return {
        "data": {
            "recipe": "synthetic",
            "synthetic": {**options, "conversion": True},
            "labels": [{"name": "click", "column": "label"}, {"name": "conversion"}],
            "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
            "cache_dir": str(tmp_path),
        },
        "model": {
            "name": "home",
            "embedding_dim": 8,
            "expert": {"hidden_units": [32], "batch_norm": True},
            "tower": {"hidden_units": [16]},
        },
        "train": {**TRAIN, "max_epochs": 2, "batch_size": 256},
    }


def check_every_output(run_dir: Path, scored_file: Path | None, tasks: list[str]) -> None:
    """predict columns, ONNX (B, T) parity with PyTorch, and the report's per-task sections."""
    run = load_run(run_dir)
    assert run.tasks == tasks
    if scored_file is not None:
        out = run_dir.parent / "scores.csv"
        score_file(run_dir, scored_file, out, backend="torch")
        scores = pl.read_csv(out)
        assert scores.columns == [f"score_{task}" for task in tasks]
        values = scores.to_numpy()
        assert np.isfinite(values).all() and ((values > 0) & (values < 1)).all()
        # the two tasks are different answers, not one copied twice
        assert np.corrcoef(values[:, 0], values[:, 1])[0, 1] < 0.99
        served = serve(run_dir, scored_file, tasks)
        np.testing.assert_allclose(served, values, atol=1e-6)
    export_onnx(run_dir)
    features = sample_features(run, 64, seed=11)
    onnx_scores = OnnxModel.from_run(run_dir).predict(features)
    assert onnx_scores.shape == (64, len(tasks))
    np.testing.assert_allclose(onnx_scores, torch_probabilities(run.model, features), atol=1e-5)
    page = write_report(run_dir).read_text()
    for task in tasks:
        assert f"Test split: {task}" in page
    assert "Experts" in page  # mixture-of-experts models show gate weights per task


def serve(run_dir: Path, raw_file: Path, tasks: list[str]) -> np.ndarray:
    """POST the raw census rows to the service: two probabilities per record."""
    from fastapi.testclient import TestClient

    from finalmlp.serve.ab import Arm
    from finalmlp.serve.app import create_app, load_arms
    from finalmlp.serve.settings import ServeSettings

    frame = pl.read_csv(raw_file, has_header=False, new_columns=list(CENSUS_COLUMNS),
                        infer_schema=False)  # fmt: skip
    numeric = {*CENSUS_MONEY, *CENSUS_COUNTS}
    records = [
        {k: float(v) if k in numeric else v.strip() for k, v in row.items()}
        for row in frame.drop("instance_weight", "marital_stat", "income").to_dicts()
    ]
    settings = ServeSettings(unknown_fields="ignore")
    client = TestClient(create_app(load_arms([Arm("default", run_dir)], "ignore"), settings))
    reply = client.post("/v1/predict", json={"records": records})
    assert reply.status_code == 200, reply.text[:500]
    body = reply.json()
    assert body["tasks"] == tasks
    return np.array([[p[t] for t in tasks] for p in body["predictions"]])


def test_census_income_two_tasks_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    raw = census_config(shared_data, tmp_path / "cache")
    metrics = train_from_config(parse_config(raw), tmp_path / "run")
    # income (6.2% positive: base-rate logloss 0.233) and never married (43.2%: 0.684) are
    # both learned, each well under its base rate after one epoch
    for task, floor, ceiling in (("income", 0.85, 0.2), ("never_married", 0.95, 0.4)):
        assert metrics["test"][f"{task}.auc"] > floor
        assert metrics["test"][f"{task}.logloss"] < ceiling
    sample = tmp_path / "sample.csv"
    source = shared_data / "census_income_kdd" / "census-income.test.gz"
    with gzip.open(source, "rt") as lines:
        sample.write_text("".join(next(lines) for _ in range(300)))
    check_every_output(tmp_path / "run", sample, ["income", "never_married"])
    assert len(CENSUS_COLUMNS) == 42


def test_synthetic_click_and_conversion_end_to_end(tmp_path: Path) -> None:
    raw = synthetic_config(tmp_path / "cache")
    metrics = train_from_config(parse_config(raw), tmp_path / "run")
    assert metrics["test"]["click.auc"] > 0.55  # 1,600 test rows: chance is 0.5 +- 0.015
    assert np.isfinite(metrics["test"]["conversion.logloss"])  # scored on clicked rows only
    check_every_output(tmp_path / "run", None, ["click", "conversion"])


def test_a_recipe_task_can_be_trained_alone(shared_data: Path) -> None:
    source = shared_data / "census_income_kdd" / "census-income.test.gz"
    data = {"recipe": "census_income", "train": str(source), "labels": ["never_married"]}
    config = parse_config({"data": data, "model": {"name": "dnn"}})
    (task,) = config.data.tasks
    assert task.name == "never_married" and task.column == "marital_stat"
    assert task.label_map is not None and task.label_map["Never married"] == 1
