"""A calibrated bundle scores through its calibration everywhere scores leave the system: batch
predict (PyTorch and ONNX Runtime), evaluate, the Scorer and the HTTP service, per arm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from serve_runs import make_run, rows

from finalmlp.bundle import load_run, replace_calibration, save_run
from finalmlp.calibration import Calibrator, IsotonicCalibrator, PlattCalibrator
from finalmlp.metrics import compute_metrics
from finalmlp.predict import evaluate_run
from finalmlp.serve.ab import Arm
from finalmlp.serve.app import create_app, load_arms
from finalmlp.serve.batch import score_file
from finalmlp.serve.onnx import export_onnx, export_problem
from finalmlp.serve.scorer import Scorer
from finalmlp.serve.settings import ServeSettings

PLATT = PlattCalibrator.from_dict({"slope": 0.5, "intercept": -0.7})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same weights three times: ``raw``, ``platt`` (exported to ONNX before it was
    calibrated) and ``isotonic`` (fitted on its own scores of random labels)."""
    folder = tmp_path_factory.mktemp("calibrated_scoring")
    paths = {"raw": make_run(folder)}
    run = load_run(paths["raw"])
    for name in ("platt", "isotonic"):
        paths[name] = folder / name
        save_run(paths[name], run.config, run.processor, run.model, run.metrics)
    export_onnx(paths["platt"])
    attach(paths["platt"], PLATT)
    data = rows(400, seed=3)
    raw = Scorer(load_run(paths["raw"])).score_frame(_typed(data))[:, 0]
    labels = np.random.default_rng(0).random(raw.size) < raw
    attach(paths["isotonic"], IsotonicCalibrator().fit(raw, labels))
    return paths


def attach(run_dir: Path, calibration: Calibrator) -> None:
    run = load_run(run_dir)
    replace_calibration(run, calibration, {**run.metrics, "calibration": {"method": "test"}})


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("price").cast(pl.Float64, strict=False))


def _scores(run_dir: Path, tmp_path: Path, **options: Any) -> np.ndarray:
    rows(150, seed=9).write_csv(tmp_path / "in.csv")
    report = score_file(run_dir, tmp_path / "in.csv", tmp_path / "out.csv", **options)
    expected = "none" if not options.get("calibrated", True) else load_run(run_dir).calibration
    assert report.calibration == getattr(expected, "method", "none")
    return pl.read_csv(tmp_path / "out.csv")["score"].to_numpy()


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_batch_predict_applies_the_calibration_after_either_backend(
    runs: dict[str, Path], tmp_path: Path, backend: str
) -> None:
    raw = _scores(runs["raw"], tmp_path, backend="torch")
    calibrated = _scores(runs["platt"], tmp_path, backend=backend)
    np.testing.assert_allclose(calibrated, PLATT.transform(raw), rtol=1e-5)
    uncalibrated = _scores(runs["platt"], tmp_path, backend=backend, calibrated=False)
    np.testing.assert_allclose(uncalibrated, raw, rtol=1e-5)


def test_calibrating_keeps_the_onnx_export_current(runs: dict[str, Path]) -> None:
    assert export_problem(runs["platt"]) is None  # the graph outputs the raw probability


def test_evaluate_scores_the_calibrated_probabilities(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    data = rows(200, seed=4)
    data.write_csv(tmp_path / "labelled.csv")
    raw = Scorer(load_run(runs["raw"])).score_frame(_typed(data))[:, 0]
    labels = data["label"].cast(pl.Float64).to_numpy()
    metrics = evaluate_run(runs["platt"], tmp_path / "labelled.csv")
    expected = compute_metrics(labels, PLATT.transform(raw))
    assert metrics["logloss"] == pytest.approx(expected["logloss"], rel=1e-6)
    assert metrics["auc"] == pytest.approx(expected["auc"], abs=1e-9)
    uncalibrated = evaluate_run(runs["platt"], tmp_path / "labelled.csv", calibrated=False)
    assert uncalibrated["logloss"] == pytest.approx(compute_metrics(labels, raw)["logloss"])


def test_each_http_arm_applies_its_own_calibration(runs: dict[str, Path]) -> None:
    arms = [Arm(name, runs[name]) for name in ("raw", "platt", "isotonic")]
    bundles = load_arms(arms)
    client = TestClient(create_app(bundles, ServeSettings()))
    records = [  # blanks sent as null, as JSON clients do
        {k: v or None for k, v in r.items() if k != "label"} for r in rows(20, seed=5).to_dicts()
    ]
    predictions = {}
    for name in ("raw", "platt", "isotonic"):
        body = {"records": records, "key": _key_for(client, name)}
        response = client.post("/v1/predict", json=body)
        assert response.status_code == 200 and response.json()["arm"] == name
        predictions[name] = np.array(response.json()["predictions"])
    raw = predictions["raw"]
    np.testing.assert_allclose(predictions["platt"], PLATT.transform(raw), rtol=1e-6)
    isotonic = load_run(runs["isotonic"]).calibration
    assert isotonic is not None
    np.testing.assert_allclose(predictions["isotonic"], isotonic.transform(raw), rtol=1e-6)
    described = {a["arm"]: a["calibration"] for a in client.get("/v1/model").json()["arms"]}
    assert described == {"raw": None, "platt": "platt", "isotonic": "isotonic"}
    big = records * 60  # over the row-wise limit: the processor's path, calibrated too
    scorer = bundles[1].scorer
    np.testing.assert_allclose(
        scorer.score_records(big)[:, 0], np.tile(predictions["platt"], 60), rtol=1e-5
    )


def _key_for(client: TestClient, arm: str) -> str:
    """A sticky key that lands on ``arm`` (arms have equal weights)."""
    from finalmlp.serve.ab import choose_arm

    arms = [b.arm for b in client.app.state.service.arms]  # type: ignore[attr-defined]
    return next(f"k{i}" for i in range(1000) if choose_arm(arms, f"k{i}").name == arm)
