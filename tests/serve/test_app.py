"""The HTTP service through TestClient: scores, every bad input, A/B, feedback, reload, metrics."""

from __future__ import annotations

import json
import math
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from finalmlp.bundle import load_run, save_run
from finalmlp.cli.main import USER_ERROR_EXIT
from finalmlp.cli.main import app as cli
from finalmlp.config import parse_config
from finalmlp.data.synthetic import generate_synthetic, synthetic_features
from finalmlp.errors import ConfigError
from finalmlp.schema import SyntheticOptions
from finalmlp.serve.ab import Arm, choose_arm
from finalmlp.serve.app import ArmBundle, create_app, load_arms
from finalmlp.serve.scorer import Scorer
from finalmlp.serve.settings import ServeSettings

SYNTHETIC = {"num_rows": 2000, "num_categorical": 4, "num_numeric": 2, "max_cardinality": 50}
KEY = {"X-API-Key": "s3cret"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two versions of a tiny FinalMLP (c0 required): ``a`` trained, ``b`` its weights moved."""
    folder = tmp_path_factory.mktemp("serve_app")
    features = synthetic_features(SyntheticOptions(**SYNTHETIC))
    features[0]["required"] = True
    config = parse_config(
        {
            "data": {
                "recipe": "synthetic",
                "synthetic": {**SYNTHETIC, "seed": 3},
                "features": features,
                "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
                "cache_dir": str(folder / "cache"),
            },
            "model": {
                "name": "finalmlp",
                "embedding_dim": 4,
                "mlp1": {"hidden_units": [16]},
                "mlp2": {"hidden_units": [16]},
                "fs_hidden_units": [8],
                "num_heads": 2,
            },
            "train": {"batch_size": 256, "max_epochs": 1, "progress": False, "seed": 1},
        }
    )
    from finalmlp.train.run import train_from_config

    train_from_config(config, folder / "a")
    run = load_run(folder / "a")
    with torch.no_grad():
        for param in run.model.parameters():
            param.add_(0.3)
    save_run(folder / "b", run.config, run.processor, run.model, run.metrics)
    return {"a": folder / "a", "b": folder / "b"}


@pytest.fixture(scope="module")
def arms(runs: dict[str, Path]) -> list[ArmBundle]:
    return load_arms([Arm("control", runs["a"], 0.7), Arm("new", runs["b"], 0.3)])


@pytest.fixture(scope="module")
def client(runs: dict[str, Path]) -> TestClient:
    """One arm, default settings."""
    return TestClient(create_app(load_arms([Arm("default", runs["a"])]), ServeSettings()))


def rows(count: int, seed: int = 5) -> list[dict[str, Any]]:
    """Synthetic raw records (some numeric values null), c0 always present."""
    frame = generate_synthetic(SyntheticOptions(**{**SYNTHETIC, "num_rows": count, "seed": seed}))
    return [{k: v for k, v in row.items() if k != "label"} for row in frame.to_dicts()]


# ----------------------------------------------------------------------------- scoring
def test_http_scores_equal_the_scorers(client: TestClient, runs: dict[str, Path]) -> None:
    records = rows(300)
    scorer = Scorer.from_path(runs["a"])  # the processor's column-wise path
    for start, stop in ((0, 1), (1, 8), (8, 300)):
        response = client.post("/v1/predict", json={"records": records[start:stop]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["arm"] == "default" and len(body["request_id"]) == 32
        # the same rows in the same model call: bit for bit
        expected = scorer.score_records(records[start:stop])[:, 0]
        np.testing.assert_array_equal(body["predictions"], expected)
    manifest = json.loads((runs["a"] / "manifest.json").read_text())
    assert body["model_version"] == manifest["content_sha256"][:12]
    # in other batches float32 matrix products round differently, by ~1e-7 relative
    all_at_once = scorer.score_records(records)[:, 0]
    np.testing.assert_allclose(body["predictions"], all_at_once[8:], rtol=1e-6)


def test_unseen_values_and_missing_optional_fields_are_scored(client: TestClient) -> None:
    response = client.post(
        "/v1/predict", json={"records": [{"c0": "never-seen", "n0": None}, {"c0": 3}]}
    )
    assert response.status_code == 200
    assert all(0 < p < 1 for p in response.json()["predictions"])


def post_raw(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post(
        "/v1/predict", content=body, headers={"Content-Type": "application/json", **headers}
    )


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("records", "index", "field", "message"),
    [
        (
            [{"c0": "1"}, {"c0": "1", "colour": "red"}],
            1,
            "colour",
            "unknown field; the model takes ['c0', 'c1', 'c2', 'c3', 'n0', 'n1']",
        ),
        ([{"c0": "1", "n0": "cheap"}], 0, "n0", "expected a number, got 'cheap'"),
        ([{"c0": "1", "n1": True}], 0, "n1", "expected a number, got True"),
        ([{"c0": {"id": 1}}], 0, "c0", "expected a string or number, got dict {'id': 1}"),
        ([{"c0": "1"}, {"c0": "2"}, {"c1": "4"}], 2, "c0", "required field is missing"),
        ([{"c0": "1"}, 5], 1, "*", "expected an object of field: value, got 5"),
        ([["c0", "1"]], 0, "*", "expected an object of field: value, got ['c0', '1']"),
    ],
)
def test_bad_records_get_422_naming_record_and_field(
    client: TestClient, records: list[Any], index: int, field: str, message: str
) -> None:
    response = client.post("/v1/predict", json={"records": records})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert (detail["record"], detail["field"]) == (index, field)
    assert detail["message"] == f"record {index}, field {field!r}: {message}"


def test_unknown_fields_can_be_ignored(arms: list[ArmBundle], runs: dict[str, Path]) -> None:
    ignoring = load_arms([Arm("default", runs["a"])], unknown_fields="ignore")
    client = TestClient(create_app(ignoring, ServeSettings(unknown_fields="ignore")))
    response = client.post("/v1/predict", json={"records": [{"c0": "1", "colour": "red"}]})
    assert response.status_code == 200
    plain = client.post("/v1/predict", json={"records": [{"c0": "1"}]}).json()
    assert response.json()["predictions"] == plain["predictions"]
    with pytest.raises(ConfigError, match="loaded with unknown_fields='ignore' but the settings"):
        create_app(ignoring, ServeSettings())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"records": [{"c0": "1"}', "body: Invalid JSON: EOF while parsing"),
        (b"\xff\xfe", "body: Invalid JSON"),
        (b"[]", "body: Input should be an object"),
        (b'{"records": {"c0": "1"}}', "records: Input should be a valid array"),
        (
            b'{"rows": [{"c0": "1"}]}',
            "records: Field required; rows: Extra inputs are not permitted",
        ),
        (b'{"records": []}', "records: List should have at least 1 item"),
        (b'{"records": [{"c0": "1"}], "key": [1]}', "key.str: Input should be a valid string"),
        (b'{"records": [{"c0": 1' + b"0" * 5000 + b"}]}", "number out of range"),
        (b'{"records": [' + b"[" * 3000 + b"]" * 3000 + b"]}", "recursion limit exceeded"),
    ],
)
def test_malformed_bodies_get_422(client: TestClient, body: bytes, message: str) -> None:
    response = post_raw(client, body)
    assert response.status_code == 422
    assert message in response.json()["detail"]["message"]


def test_limits_give_413(runs: dict[str, Path]) -> None:
    settings = ServeSettings(max_batch=4, max_body_bytes=2048)
    client = TestClient(create_app(load_arms([Arm("default", runs["a"])]), settings))
    response = client.post("/v1/predict", json={"records": [{"c0": "1"}] * 5})
    assert response.status_code == 413
    assert response.json()["detail"]["message"] == (
        "5 records is over the limit of 4 per request; split the request"
    )
    big = json.dumps({"records": [{"c0": "x" * 3000}]}).encode()
    response = post_raw(client, big)
    assert response.status_code == 413
    assert response.json()["detail"]["message"] == (
        f"request body of {len(big):,} bytes is over the 2,048 limit"
    )
    response = client.post(  # no Content-Length: counted as it arrives
        "/v1/predict",
        content=iter([big[:1500], big[1500:]]),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["detail"]["message"] == "request body is over the 2,048 byte limit"


def test_api_key_protects_scoring_feedback_report_and_admin(arms: list[ArmBundle]) -> None:
    client = TestClient(create_app(arms, ServeSettings(api_key="s3cret")))
    message = "missing or wrong API key: send it in the X-API-Key header"
    for method, path in [
        ("post", "/v1/predict"),
        ("post", "/v1/feedback"),
        ("get", "/v1/ab"),
        ("post", "/v1/admin/reload"),
    ]:
        for headers in ({}, {"X-API-Key": "wrong"}):
            response = client.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, path
            assert response.json()["detail"]["message"] == message
    ok = client.post("/v1/predict", json={"records": [{"c0": "1"}]}, headers=KEY)
    assert ok.status_code == 200
    for path in ("/healthz", "/v1/model", "/metrics"):  # probes stay open
        assert client.get(path).status_code == 200


# ----------------------------------------------------------------------------- A/B
def test_ab_split_is_sticky_and_follows_weights(arms: list[ArmBundle]) -> None:
    client = TestClient(create_app(arms, ServeSettings(key_field="c0")))
    plain_arms = [a.arm for a in arms]
    counts: Counter[str] = Counter()
    for i in range(400):
        body = client.post("/v1/predict", json={"records": [{"c0": "1"}], "key": f"user-{i}"})
        arm = body.json()["arm"]
        assert arm == choose_arm(plain_arms, f"user-{i}").name
        counts[arm] += 1
    assert abs(counts["control"] / 400 - 0.7) < 0.05  # exact weights: 10k keys in test_ab
    versions = {a.name: a.version for a in arms}
    for i in range(20):  # the key from the first record's key_field (c0), sticky
        records = [{"c0": str(i)}, {"c0": "other"}]
        seen = {
            client.post("/v1/predict", json={"records": records}).json()["arm"] for _ in range(3)
        }
        assert seen == {choose_arm(plain_arms, str(i)).name}
    response = client.post("/v1/predict", json={"records": [{"c0": "1"}], "key": "user-1"})
    assert response.json()["model_version"] == versions[response.json()["arm"]]


def test_feedback_gives_the_hand_computed_report(arms: list[ArmBundle]) -> None:
    client = TestClient(create_app(arms, ServeSettings()))
    outcomes = {"control": [[1, 0, 0], [1]], "new": [[0, 0], [1, 0]]}
    keys = {a.name: _key_for(arms, a.name) for a in arms}
    scored: dict[str, list[float]] = {"control": [], "new": []}
    for arm, batches in outcomes.items():
        for batch in batches:
            records = [{"c0": str(i)} for i in range(len(batch))]
            body = client.post("/v1/predict", json={"records": records, "key": keys[arm]}).json()
            assert body["arm"] == arm
            scored[arm] += body["predictions"]
            feedback = client.post(
                "/v1/feedback", json={"request_id": body["request_id"], "outcomes": batch}
            )
            assert feedback.status_code == 200
            assert feedback.json() == {
                "request_id": body["request_id"],
                "arm": arm,
                "recorded": len(batch),
            }
    report = client.get("/v1/ab").json()["arms"]
    control, new = report["control"], report["new"]
    assert (control["impressions"], control["clicks"], control["ctr"]) == (4, 2, 0.5)
    assert (new["impressions"], new["clicks"], new["ctr"]) == (4, 1, 0.25)
    assert control["mean_predicted_ctr"] == pytest.approx(np.mean(scored["control"]))
    assert new["mean_predicted_ctr"] == pytest.approx(np.mean(scored["new"]))
    flat = [o for batch in outcomes["new"] for o in batch]
    assert new["auc"] == pytest.approx(_pairwise_auc(flat, scored["new"]))
    # pooled p = 3/8, var = 3/8 * 5/8 * (1/4 + 1/4) = 15/128, z = (1/4 - 2/4) / sqrt(15/128)
    assert new["vs_control"]["z"] == pytest.approx(-0.25 / math.sqrt(15 / 128))
    assert new["vs_control"]["p_value"] == pytest.approx(0.4652, abs=1e-4)


def _key_for(arms: list[ArmBundle], name: str) -> str:
    plain = [a.arm for a in arms]
    return next(f"user-{i}" for i in range(100) if choose_arm(plain, f"user-{i}").name == name)


def _pairwise_auc(outcomes: list[int], scores: list[float]) -> float:
    pos = [s for s, o in zip(scores, outcomes, strict=True) if o]
    neg = [s for s, o in zip(scores, outcomes, strict=True) if not o]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_feedback_errors(client: TestClient) -> None:
    response = client.post("/v1/feedback", json={"request_id": "nope", "outcomes": [1]})
    assert response.status_code == 404
    assert response.json()["detail"]["message"].startswith("unknown request id 'nope'")
    scored = client.post("/v1/predict", json={"records": [{"c0": "1"}, {"c0": "2"}]}).json()
    response = client.post(
        "/v1/feedback", json={"request_id": scored["request_id"], "outcomes": [1]}
    )
    assert response.status_code == 422
    assert "scored 2 records but 1 outcomes came" in response.json()["detail"]["message"]
    for outcomes in ([1, 2], ["1", 0], [True, 0]):
        response = client.post(
            "/v1/feedback", json={"request_id": scored["request_id"], "outcomes": outcomes}
        )
        assert response.status_code == 422
        assert response.json()["detail"]["message"].startswith("outcomes.")


def test_ab_log_file_survives_a_restart(arms: list[ArmBundle], tmp_path: Path) -> None:
    settings = ServeSettings(ab_log=tmp_path / "ab.jsonl")
    with TestClient(create_app(arms, settings)) as client:
        scored = client.post("/v1/predict", json={"records": [{"c0": "1"}], "key": "u"}).json()
    with TestClient(create_app(arms, settings)) as client:
        response = client.post(
            "/v1/feedback", json={"request_id": scored["request_id"], "outcomes": [1]}
        )
        assert response.status_code == 200
        assert client.get("/v1/ab").json()["arms"][scored["arm"]]["clicks"] == 1


# ----------------------------------------------------------------------------- model, metrics
def test_model_endpoint_describes_each_arm(arms: list[ArmBundle], runs: dict[str, Path]) -> None:
    body = TestClient(create_app(arms, ServeSettings())).get("/v1/model").json()
    control = body["arms"][0]
    assert (control["arm"], control["weight"], control["model"]) == ("control", 0.7, "finalmlp")
    assert control["rowwise_encoding"] is True
    manifest = json.loads((runs["a"] / "manifest.json").read_text())
    assert control["content_sha256"] == manifest["content_sha256"]
    assert control["fields"][0] == {"name": "c0", "kind": "categorical", "required": True}
    assert control["fields"][-1] == {"name": "n1", "kind": "numeric", "required": False}
    assert set(control["metrics"]["valid"]) >= {"auc", "logloss"}
    assert body["arms"][1]["model_version"] != control["model_version"]


def test_metrics_count_requests_errors_latency_and_arms(arms: list[ArmBundle]) -> None:
    client = TestClient(create_app(arms, ServeSettings()))
    for i in range(3):
        client.post("/v1/predict", json={"records": [{"c0": "1"}] * 2, "key": f"user-{i}"})
    client.post("/v1/predict", json={"records": [{"c0": "1", "zz": 1}]})
    text = client.get("/metrics").text
    assert 'finalmlp_requests_total{endpoint="/v1/predict",status="200"} 3.0' in text
    assert 'finalmlp_requests_total{endpoint="/v1/predict",status="422"} 1.0' in text
    assert 'finalmlp_errors_total{endpoint="/v1/predict",kind="client"} 1.0' in text
    assert 'finalmlp_request_seconds_count{endpoint="/v1/predict"} 4.0' in text
    impressions = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("finalmlp_impressions_total{")
    )
    assert impressions == 6.0
    for arm in arms:
        assert f'finalmlp_model_info{{arm="{arm.name}",model_version="{arm.version}"}} 1.0' in text
    other = TestClient(create_app(arms, ServeSettings())).get("/metrics").text
    assert 'status="200"} 3.0' not in other  # a registry per app


# ----------------------------------------------------------------------------- reload
def test_reload_under_load_loses_no_request(runs: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "current"  # a deployment swaps this link to a new bundle version
    link.symlink_to(runs["a"])
    arms = load_arms([Arm("default", link)])
    versions = {v: load_arms([Arm("x", runs[v])])[0].version for v in ("a", "b")}
    statuses: Counter[int] = Counter()
    seen: set[str] = set()
    stop = threading.Event()
    records = rows(100)[:4]

    with TestClient(create_app(arms, ServeSettings())) as client:

        def hammer() -> None:
            while not stop.is_set():
                response = client.post("/v1/predict", json={"records": records})
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    seen.add(response.json()["model_version"])

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for worker in workers:
            worker.start()
        for version in ("b", "a", "b", "a", "b"):
            tmp_link = tmp_path / "next"
            tmp_link.symlink_to(runs[version])
            os.replace(tmp_link, link)
            response = client.post("/v1/admin/reload", json={})
            assert response.status_code == 200
            assert response.json()["arms"][0]["model_version"] == versions[version]
        stop.set()
        for worker in workers:
            worker.join()
        assert client.get("/healthz").json()["arms"] == {"default": versions["b"]}
    assert set(statuses) == {200} and statuses[200] > 10
    assert seen == set(versions.values())


def test_a_failed_reload_keeps_serving(runs: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "current"
    link.symlink_to(runs["a"])
    client = TestClient(create_app(load_arms([Arm("default", link)]), ServeSettings()))
    link.unlink()
    link.symlink_to(tmp_path)  # not a run directory
    response = client.post("/v1/admin/reload", json={})
    assert response.status_code == 409
    assert response.json()["detail"]["message"].startswith(
        "reload failed, still serving the previous models: "
    )
    assert client.post("/v1/predict", json={"records": [{"c0": "1"}]}).status_code == 200


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give one BUNDLE directory, or --arm NAME=DIR:WEIGHT"),
        (["--arm", "control"], "must look like NAME=DIR:WEIGHT"),
        (["--arm", "a=x:0"], "weight must be a positive number"),
        (["{tmp}"], "is not a finalmlp run directory"),
        (["{run}", "--unknown-fields", "drop"], "unknown_fields"),
        (["--arm", "a={run}", "--arm", "a={run}"], "arm names must be unique"),
    ],
)
def test_serve_cli_user_errors(
    args: list[str], message: str, runs: dict[str, Path], tmp_path: Path
) -> None:
    argv = [a.format(tmp=tmp_path, run=runs["a"]) for a in args]
    result = CliRunner().invoke(cli, ["serve", *argv])
    assert result.exit_code == USER_ERROR_EXIT, result.output
    assert result.output.startswith("error:") and message in result.output
