"""Raw event log -> histories -> train (DIN, attention-pooled FinalMLP) -> batch scoring with
histories given as Parquet list columns, and served scores over HTTP with each record's recent
events from the raw log; on the synthetic log always, on MovieLens when ``../shared`` is
there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from finalmlp.bundle import Run, load_run
from finalmlp.config import parse_config
from finalmlp.data.frames import frame_histories, load_frames
from finalmlp.data.split import EncodedSplit
from finalmlp.features.history import RowHistories
from finalmlp.inference import predict_proba
from finalmlp.predict import predict_file
from finalmlp.schema import SequenceFeature
from finalmlp.serve.ab import Arm
from finalmlp.serve.app import create_app, load_arms
from finalmlp.serve.settings import ServeSettings
from finalmlp.train.run import train_from_config

TRAIN = {"batch_size": 256, "max_epochs": 4, "learning_rate": 0.005, "progress": False, "seed": 3}
DIN = {"name": "din", "embedding_dim": 8, "mlp": {"hidden_units": [32, 16]}}
FINALMLP = {
    "name": "finalmlp", "embedding_dim": 8, "num_heads": 2,
    "mlp1": {"hidden_units": [32]}, "mlp2": {"hidden_units": [16]}, "fs_hidden_units": [16],
}  # fmt: skip


def _with_lists(
    frame: pl.DataFrame, histories: RowHistories, names: dict[str, str]
) -> pl.DataFrame:
    """The rows with each history as a list column (what a scoring file or request holds)."""
    columns = {}
    for feature, event_column in names.items():
        values = histories.events[event_column].cast(pl.Utf8).to_list()
        columns[feature] = [
            values[int(e) - int(n) : int(e)]
            for e, n in zip(histories.ends, histories.lengths, strict=True)
        ]
    return frame.with_columns([pl.Series(k, v, dtype=pl.List(pl.Utf8)) for k, v in columns.items()])


def _train_and_score_lists(
    data: dict[str, Any], model: dict[str, Any], tmp_path: Path, names: dict[str, str]
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Train; then score the test rows twice: from the built histories, and from a Parquet
    file whose history columns are lists. Returns metrics and both scores."""
    config = parse_config({"data": {**data, "cache_dir": str(tmp_path / "cache")},
                           "model": model, "train": TRAIN})  # fmt: skip
    metrics = train_from_config(config, tmp_path / "run")
    run = load_run(tmp_path / "run")
    frames = load_frames(config.data)
    test_histories = frame_histories(frames, config.data)["test"]
    encoded = run.processor.transform(frames["test"], test_histories)
    built = run.calibrate(predict_proba(run.model, EncodedSplit(encoded, None)))[:, 0]
    scoring = _with_lists(frames["test"], test_histories, names)
    scoring.write_parquet(tmp_path / "score.parquet")
    predict_file(tmp_path / "run", tmp_path / "score.parquet", tmp_path / "scores.csv",
                 backend="torch")  # fmt: skip
    listed = pl.read_csv(tmp_path / "scores.csv")["score"].to_numpy()
    served = _served_from_events(run, frames, SERVED_ROWS)
    np.testing.assert_allclose(served, built[SERVED_ROWS], rtol=1e-5, atol=1e-6)
    return metrics, built, listed


SERVED_ROWS = [0, 1, 2, 3, 4]


def _served_from_events(run: Run, frames: dict[str, pl.DataFrame], rows: list[int]) -> np.ndarray:
    """Scores of test ``rows`` from the HTTP service, each record sending the model's fields,
    its time and, as its recent events, every row of its user's in the raw log (later ones,
    its own and non-behaviour ones included: the service leaves them out)."""
    options = run.config.data.history
    assert options is not None
    history = [f for f in run.processor.features if isinstance(f, SequenceFeature) and f.history]
    fields = [c for c in run.processor.columns if c not in {f.column for f in history}]
    event_keys = list(dict.fromkeys([options.time, *(f.history for f in history),
                                     *options.columns]))  # fmt: skip
    log = pl.concat([frames[s] for s in ("train", "valid", "test")], how="vertical_relaxed")
    records = []
    for row in rows:
        keys = dict.fromkeys([*fields, options.user, options.time])
        record = {c: frames["test"][c][row] for c in keys}
        own = log.filter(pl.col(options.user) == record[options.user])
        records.append({**record, "events": own.select(event_keys).to_dicts()})
    client = TestClient(create_app(load_arms([Arm("default", run.path)]), ServeSettings()))
    response = client.post("/v1/predict", json={"records": records})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["predictions"])


SYNTHETIC = {"recipe": "synthetic", "synthetic": {"num_rows": 8000, "histories": True, "seed": 5}}
SYNTHETIC_NAMES = {"hist_item": "item", "hist_category": "category"}


@pytest.mark.parametrize("model", [DIN, FINALMLP], ids=["din", "finalmlp-attention"])
def test_synthetic_event_log_end_to_end(model: dict[str, Any], tmp_path: Path) -> None:
    metrics, built, listed = _train_and_score_lists(SYNTHETIC, model, tmp_path, SYNTHETIC_NAMES)
    assert metrics["rows"] == {"train": 6400, "valid": 800, "test": 800}
    assert metrics["test"]["auc"] > 0.7  # the history carries the signal
    np.testing.assert_allclose(listed, built, rtol=1e-5, atol=1e-6)


def test_movielens_recipe_end_to_end(shared_data: Path, tmp_path: Path) -> None:
    data = {"recipe": "movielens_latest",
            "train": str(shared_data / "movielens_latest_small" / "ratings.csv")}  # fmt: skip
    names = {"hist_movies": "movieId", "hist_genres": "genres"}
    metrics, built, listed = _train_and_score_lists(data, DIN, tmp_path, names)
    assert metrics["rows"]["test"] == pytest.approx(10_000, abs=50)
    assert metrics["test"]["auc"] > 0.6
    np.testing.assert_allclose(listed, built, rtol=1e-5, atol=1e-6)
