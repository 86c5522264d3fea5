"""End to end on Frappe: train -> run directory -> `finalmlp serve` in a subprocess -> HTTP scores
equal to the Scorer's and to `finalmlp predict`'s for the same rows; SIGHUP reloads."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest

from finalmlp.config import parse_config
from finalmlp.predict import predict_file
from finalmlp.serve.scorer import Scorer
from finalmlp.train.run import train_from_config

MODEL = {
    "name": "finalmlp",
    "embedding_dim": 8,
    "mlp1": {"hidden_units": [64], "batch_norm": True},
    "mlp2": {"hidden_units": [32], "batch_norm": True},
    "fs_hidden_units": [32],
    "fs1_context": ["user"],
    "fs2_context": ["item"],
    "num_heads": 2,
}


@pytest.fixture(scope="module")
def trained() -> dict[str, Path]:
    """Runs trained in this module (``shared_data`` is function-scoped: train once here)."""
    return {}


@pytest.fixture
def frappe_run(
    shared_data: Path, trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    if "frappe" in trained:
        return trained["frappe"]
    folder = tmp_path_factory.mktemp("frappe_serve")
    data = {"recipe": "frappe_x1", "cache_dir": str(folder / "cache")}
    for split, rows in (("train", 20_000), ("valid", 2_000), ("test", 2_000)):
        frame = pl.read_csv(shared_data / "frappe_x1" / f"{split}.csv", infer_schema=False)
        frame.head(rows).write_csv(folder / f"{split}.csv")
        data[split] = str(folder / f"{split}.csv")
    train = {"batch_size": 1024, "max_epochs": 1, "progress": False, "seed": 1}
    train_from_config(parse_config({"data": data, "model": MODEL, "train": train}), folder / "run")
    trained["frappe"] = folder / "run"
    return folder / "run"


@pytest.fixture
def test_rows(shared_data: Path) -> pl.DataFrame:
    return pl.read_csv(shared_data / "frappe_x1" / "test.csv", infer_schema=False, n_rows=200)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def server(frappe_run: Path, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "finalmlp.cli.main",
        "serve",
        str(frappe_run),
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "server did not start within 60 s"
                time.sleep(0.2)
        yield Server(url, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_served_scores_equal_scorer_and_predict(
    server: Server, frappe_run: Path, test_rows: pl.DataFrame, tmp_path: Path
) -> None:
    records = test_rows.drop("label").to_dicts()
    scorer = Scorer.from_path(frappe_run)
    served: list[float] = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for start, stop in ((0, 1), (1, 8), (8, 200)):
            response = client.post("/v1/predict", json={"records": records[start:stop]})
            assert response.status_code == 200, response.text
            assert response.json()["arm"] == "default"
            predictions = response.json()["predictions"]
            # the server runs torch with 1 thread, this process with more: float32 products
            # may round differently, ~1e-8 relative
            expected = scorer.score_records(records[start:stop])[:, 0]
            np.testing.assert_allclose(predictions, expected, rtol=1e-6, atol=0)
            served += predictions
        bad = client.post("/v1/predict", json={"records": [{"user": "1", "colour": "red"}]})
        assert bad.status_code == 422 and bad.json()["detail"]["field"] == "colour"
    test_rows.write_csv(tmp_path / "rows.csv")
    predict_file(frappe_run, tmp_path / "rows.csv", tmp_path / "scores.csv")
    batch = pl.read_csv(tmp_path / "scores.csv")["score"].to_numpy()
    # `finalmlp predict` scores other batches (float32 products round differently)
    np.testing.assert_allclose(served, batch, rtol=1e-5, atol=1e-7)


def test_sighup_reloads_without_stopping(server: Server) -> None:
    before = httpx.get(f"{server.url}/healthz").json()
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while 'finalmlp_reloads_total{outcome="ok"} 1.0' not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline, "SIGHUP did not reload within 20 s"
        time.sleep(0.2)
    assert httpx.get(f"{server.url}/healthz").json() == before  # the same bundle, reloaded
    response = httpx.post(f"{server.url}/v1/predict", json={"records": [{"user": "1"}]})
    assert response.status_code == 200
