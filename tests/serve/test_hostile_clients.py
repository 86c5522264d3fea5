"""Issue 18: the service under hostile and slow clients. One test (or more) per defect found:
non-finite scores, stalled connections, broken bundles on reload, empty API keys, non-JSON
bodies, floods of tiny records, bad records in micro-batches, echoed input, huge integers and
batch-dependent scores."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import math
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from test_app import rows, runs  # noqa: F401  (the module-scoped trained runs)
from typer.testing import CliRunner

from finalmlp.bundle import _hashes
from finalmlp.cli.main import USER_ERROR_EXIT
from finalmlp.cli.main import app as cli
from finalmlp.serve import bodies
from finalmlp.serve.ab import ABLog, Arm
from finalmlp.serve.app import Service, _reload_logged, create_app, load_arms
from finalmlp.serve.scorer import Scorer
from finalmlp.serve.server import serve_in_thread, uvicorn_config
from finalmlp.serve.settings import ServeSettings

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def client(runs: dict[str, Path]) -> TestClient:  # noqa: F811
    return TestClient(create_app(load_arms([Arm("default", runs["a"])]), ServeSettings()))


# ----------------------------------------------------------------------------- 1: NaN scores
@pytest.mark.parametrize("value", ["3e38", 1e300, -1e300, 10**300])
def test_a_huge_number_is_a_422_naming_the_field_never_a_null_score(
    client: TestClient, value: Any
) -> None:
    response = client.post("/v1/predict", json={"records": [{"c0": "1", "n0": value}]})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert (detail["record"], detail["field"]) == (0, "n0")
    assert "too large for the model: its score is not a finite number" in detail["message"]
    assert "training saw values from" in detail["message"]
    fine = client.post("/v1/predict", json={"records": [{"c0": "1", "n0": 0.5}]})
    assert fine.status_code == 200 and math.isfinite(fine.json()["predictions"][0])


def test_the_ab_log_never_holds_nan_and_an_old_nan_log_still_reports(tmp_path: Path) -> None:
    path = tmp_path / "ab.jsonl"
    log = ABLog(path)
    log.log_impressions("r1", "a", [math.nan, 0.4])
    log.log_feedback("r1", [1, 0])
    log.close()

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in the log")

    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=no_constants)  # strict JSON: no NaN/Infinity
    assert ABLog(path).report()["arms"]["a"]["unscored"] == 1
    # a log written before the fix held a bare NaN: it replays, and the report still answers
    old = tmp_path / "old.jsonl"
    old.write_text(
        '{"type":"impressions","request_id":"u","arm":"a","predictions":[NaN, 0.2, 0.7],'
        '"time":1}\n{"type":"feedback","request_id":"u","outcomes":[1, 0, 1],"time":2}\n'
    )
    report = ABLog(old).report()["arms"]["a"]
    assert (report["feedback"], report["clicks"], report["unscored"]) == (3, 2, 1)
    assert report["auc"] == 1.0 and report["mean_predicted_ctr"] == pytest.approx(0.45)


def test_ab_endpoint_answers_after_a_nan_log_is_replayed(
    runs: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "ab.jsonl"
    path.write_text(
        '{"type":"impressions","request_id":"u","arm":"default","predictions":[NaN],"time":1}\n'
        '{"type":"feedback","request_id":"u","outcomes":[1],"time":2}\n'
    )
    settings = ServeSettings(ab_log=path)
    with TestClient(create_app(load_arms([Arm("default", runs["a"])]), settings)) as client:
        response = client.get("/v1/ab")
    assert response.status_code == 200
    assert response.json()["arms"]["default"]["unscored"] == 1


# ----------------------------------------------------------------------------- 2: slow clients
@pytest.fixture(scope="module")
def live_server(runs: dict[str, Path]) -> Any:  # noqa: F811
    """The service under uvicorn on a free port, with 0.5 s header and body deadlines."""
    settings = ServeSettings(header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_timeout_s=1)
    app = create_app(load_arms([Arm("default", runs["a"])]), settings)
    with serve_in_thread(app, settings) as port:
        yield port


def _wait_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    sock.settimeout(seconds)
    received = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return received, time.monotonic() - start
        received += chunk


@pytest.mark.parametrize(
    ("sent", "phase"),
    [
        (b"", "headers"),  # connects and sends nothing
        (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Ty", "headers"),  # stalls in headers
        (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"records": [',
            "body",
        ),  # half a body
    ],
)
def test_a_stalled_client_is_dropped_in_bounded_time(
    live_server: int, sent: bytes, phase: str
) -> None:
    with socket.create_connection(("127.0.0.1", live_server)) as sock:
        sock.sendall(sent)
        received, seconds = _wait_closed(sock, 5.0)  # today: never closed (recv times out)
    assert seconds < 3.0
    assert received.startswith(b"HTTP/1.1 408 ")
    assert f"request {phase} not received within 0.5 s".encode() in received


def test_a_byte_at_a_time_client_is_dropped_and_normal_clients_are_served(
    live_server: int,
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", live_server)) as sock:
        start = time.monotonic()
        try:
            for byte in request[:-2]:  # a byte every 0.1 s: 3 s for the headers
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # the server closed the connection under us
        received, _ = _wait_closed(sock, 5.0)
        assert time.monotonic() - start < 4.0
    assert received.startswith(b"HTTP/1.1 408 ")
    with socket.create_connection(("127.0.0.1", live_server)) as sock:  # a normal request
        sock.sendall(request)
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")


def test_serve_settings_expose_timeouts_and_connection_limit() -> None:
    settings = ServeSettings()
    assert (settings.header_timeout_s, settings.body_timeout_s) == (10.0, 30.0)
    config = uvicorn_config(object(), "127.0.0.1", 8000, ServeSettings(max_connections=7))
    assert config.limit_concurrency == 7 and config.timeout_keep_alive == 5


# ----------------------------------------------------------------------------- 3: reload
def _broken_copies(run: Path, folder: Path) -> dict[str, Path]:
    copies = {}
    bad_byte = folder / "manifest_byte"
    shutil.copytree(run, bad_byte)
    manifest = (bad_byte / "manifest.json").read_bytes()
    (bad_byte / "manifest.json").write_bytes(manifest[:10] + b"\xff" + manifest[10:])
    copies["manifest \\xff"] = bad_byte
    bad_calibration = folder / "calibration_list"
    shutil.copytree(run, bad_calibration)
    (bad_calibration / "calibration.json").write_text('{"method": ["platt"]}')
    manifest_data = json.loads((bad_calibration / "manifest.json").read_text())
    _, manifest_data["content_sha256"] = _hashes(bad_calibration)  # re-hashed: looks intact
    manifest_data["format_version"] = 2
    (bad_calibration / "manifest.json").write_text(json.dumps(manifest_data))
    copies["calibration method list"] = bad_calibration
    return copies


def test_broken_bundles_on_reload_answer_409_and_every_failure_is_counted(
    runs: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    link = tmp_path / "current"
    link.symlink_to(runs["a"])
    app = create_app(load_arms([Arm("default", link)]), ServeSettings())
    client = TestClient(app, raise_server_exceptions=False)
    broken = _broken_copies(runs["a"], tmp_path)
    reasons = {
        "manifest \\xff": "manifest.json is not UTF-8 text (byte 0xff at position 10)",
        "calibration method list": "calibration method must be one of",
        "not a run": "is not a finalmlp run directory",
    }
    failures = 0
    for name, directory in [*broken.items(), ("not a run", tmp_path)] * 2:
        link.unlink()
        link.symlink_to(directory)
        response = client.post("/v1/admin/reload", json={})
        failures += 1
        assert response.status_code == 409, (name, response.text)
        message = response.json()["detail"]["message"]
        assert message.startswith("reload failed, still serving the previous models: "), name
        assert reasons[name] in message, message
        assert client.post("/v1/predict", json={"records": [{"c0": "1"}]}).status_code == 200
    text = client.get("/metrics").text
    assert f'finalmlp_reloads_total{{outcome="failed"}} {float(failures)}' in text


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("manifest \\xff", "manifest.json is not UTF-8 text (byte 0xff at position 10)"),
        ("calibration method list", "calibration method must be one of"),
    ],
)
def test_a_failed_sighup_reload_logs_one_line_with_the_reason(
    runs: dict[str, Path],  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    case: str,
    reason: str,
) -> None:
    link = tmp_path / "current"
    link.symlink_to(runs["a"])
    service = Service(load_arms([Arm("default", link)]), ServeSettings())
    link.unlink()
    link.symlink_to(_broken_copies(runs["a"], tmp_path)[case])
    with caplog.at_level(logging.ERROR, logger="finalmlp.serve.app"):
        asyncio.run(_reload_logged(service))
    lines = [r.getMessage() for r in caplog.records if r.name == "finalmlp.serve.app"]
    assert len(lines) == 1
    assert lines[0].startswith("reload on SIGHUP failed, still serving the previous models: ")
    assert reason in lines[0]
    assert service.metrics.reloads.labels("failed")._value.get() == 1.0


# ----------------------------------------------------------------------------- 4: API key
@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"FINALMLP_API_KEY": ""}, [], "FINALMLP_API_KEY is set but empty"),
        ({"FINALMLP_API_KEY": " s3cret"}, [], "leading or trailing white space"),
        ({}, ["--api-key", "s3cret "], "leading or trailing white space"),
        ({}, ["--api-key", ""], "api_key"),
    ],
)
def test_an_empty_or_space_padded_api_key_is_refused_at_start(
    runs: dict[str, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    args: list[str],
    message: str,
) -> None:
    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: started.append(self))
    monkeypatch.delenv("FINALMLP_API_KEY", raising=False)
    result = CliRunner().invoke(cli, ["serve", str(runs["a"]), *args], env=env)
    assert result.exit_code == USER_ERROR_EXIT, result.output
    assert result.output.startswith("error:") and message in result.output
    assert not started


# ----------------------------------------------------------------------------- 5: content type
@pytest.mark.parametrize("path", ["/v1/predict", "/v1/feedback", "/v1/admin/reload"])
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"Content-Type": "text/plain"}, "got text/plain"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "got application/x-www-form"),
        ({"Content-Type": "multipart/form-data; boundary=x"}, "got multipart/form-data"),
        ({}, "got none"),
    ],
)
def test_posts_that_are_not_json_get_415(
    client: TestClient, path: str, headers: dict[str, str], reason: str
) -> None:
    body = json.dumps({"records": [{"c0": "1"}]}).encode()
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 415
    message = response.json()["detail"]["message"]
    assert (
        message.startswith("send the body as Content-Type: application/json") and reason in message
    )


def test_json_with_a_charset_is_accepted_and_gzip_is_refused_clearly(client: TestClient) -> None:
    body = json.dumps({"records": [{"c0": "1"}]}).encode()
    ok = client.post(
        "/v1/predict", content=body, headers={"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert ok.status_code == 200
    json_header = {"Content-Type": "application/json"}
    declared = client.post(
        "/v1/predict",
        content=gzip.compress(body),
        headers={**json_header, "Content-Encoding": "gzip"},
    )
    assert declared.status_code == 415
    assert "Content-Encoding 'gzip' is not accepted" in declared.json()["detail"]["message"]
    undeclared = client.post("/v1/predict", content=gzip.compress(body), headers=json_header)
    assert undeclared.status_code == 415
    assert undeclared.json()["detail"]["message"].startswith("the body is gzip-compressed")


# ----------------------------------------------------------------------------- 6: floods
def test_a_body_of_millions_of_tiny_records_is_refused_before_it_is_parsed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real = bodies.parse_body
    monkeypatch.setattr(bodies, "parse_body", lambda m, b: parsed.append(len(b)) or real(m, b))
    flood = b'{"records":[' + b"0," * 1_000_000 + b'0], "key": "u"}'
    response = client.post(
        "/v1/predict", content=flood, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["detail"]["message"] == (
        "records: more than 1,024 per request is over the limit; split it"
    )
    assert parsed == []  # the whole body was never parsed
    outcomes = b'{"request_id": "x", "outcomes": [' + b"1," * 1_000_000 + b"1]}"
    response = client.post(
        "/v1/feedback", content=outcomes, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and parsed == []


def test_the_bounded_scan_counts_only_up_to_the_limit() -> None:
    over = bodies.array_length_over
    assert over(b'{"key": 1, "records": [{}, {}, {}]}', "records", 2)
    assert not over(b'{"records": [{}, {}, {}]}', "records", 3)
    assert not over(b' { "records" : [ ] } ', "records", 0)
    assert not over(b'{"records": [1, 2', "records", 5)  # malformed: the parse names it
    assert not over(b"[1, 2, 3]", "records", 1)
    assert not over(b"\xff\xfe", "records", 1)
    assert over(b'{"records": [[1, [2]], "a,b", {"x": [1, 2, 3]}]}', "records", 2)


def test_large_valid_bodies_are_still_scored(client: TestClient) -> None:
    records = [{**r, "c1": "x" * 100} for r in rows(600)]  # about 100 KB: the scanned path
    body = json.dumps({"records": records}).encode()
    assert len(body) > bodies.SCAN_FROM_BYTES
    response = client.post(
        "/v1/predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 600


# ----------------------------------------------------------------------------- 7: micro-batches
def test_invalid_requests_never_join_a_micro_batch(runs: dict[str, Path]) -> None:  # noqa: F811
    arms = load_arms([Arm("default", runs["a"])])
    service = Service(arms, ServeSettings(micro_batch_workers=1))
    scorer = arms[0].scorer
    calls: list[int] = []
    real = scorer.score_prepared

    def counting(prepared: Any) -> np.ndarray:
        calls.append(prepared.num_rows)
        time.sleep(0.01)  # keep the worker busy so that requests queue and batch
        return real(prepared)

    scorer.score_prepared = counting  # type: ignore[method-assign]
    good = rows(100)[:40]
    requests: list[list[dict[str, Any]]] = []
    for i in range(40):
        requests.append([good[i]] if i % 5 else [{**good[i], "n1": "abc"}])

    async def run_all() -> list[Any]:
        return await asyncio.gather(
            *(service.score(arms[0], r) for r in requests), return_exceptions=True
        )

    results = asyncio.run(run_all())
    failed = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failed == list(range(0, 40, 5))
    assert sum(calls) == 32  # only the valid requests' rows, each scored once
    assert len(calls) < 32  # and batched


# ----------------------------------------------------------------------------- 8, 9: messages
def test_error_replies_quote_at_most_100_characters_of_input(client: TestClient) -> None:
    name = "f" * 1_000_000
    response = client.post("/v1/predict", json={"records": [{"c0": "1", name: 1}]})
    assert response.status_code == 422 and len(response.content) < 2000
    detail = response.json()["detail"]
    assert detail["field"] == "f" * 100 + "... (1,000,000 characters)"
    value = client.post(
        "/v1/predict", json={"records": [{"c0": "1", "n0": "9" * 50 + "x" * 10**6}]}
    )
    assert value.status_code == 422 and len(value.content) < 2000
    assert "... (1,000,050 characters)" in value.json()["detail"]["message"]
    extra = client.post("/v1/predict", json={"records": [{"c0": "1"}], "k" * 10**6: 1})
    assert extra.status_code == 422 and len(extra.content) < 2000
    nested = client.post("/v1/predict", json={"records": [{"c0": [[1] * 10**5]}]})
    assert nested.status_code == 422 and len(nested.content) < 2000


def test_a_401_digit_integer_names_its_record_and_field(client: TestClient) -> None:
    body = b'{"records": [{"c0": "1"}, {"c0": "1", "n0": 1' + b"0" * 400 + b"}]}"
    response = client.post(
        "/v1/predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert (detail["record"], detail["field"]) == (1, "n0")
    assert "number of 401 digits is too large" in detail["message"]


# ----------------------------------------------------------------------------- 10: batches
BATCH_TOLERANCE = 1e-6  # docs/serving.md: a record's score alone vs in any micro-batch


def test_a_records_score_depends_on_its_batch_only_within_the_documented_tolerance(
    runs: dict[str, Path],  # noqa: F811
) -> None:
    scorer = Scorer.from_path(runs["a"])
    records = rows(257)
    alone = np.concatenate([scorer.score_records([r]) for r in records])
    for size in (2, 7, 64, 257):
        batched = np.concatenate(
            [scorer.score_records(records[i : i + size]) for i in range(0, len(records), size)]
        )
        np.testing.assert_allclose(batched, alone, rtol=BATCH_TOLERANCE, atol=0)
    text = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    assert "relative difference" in text and "1e-6" in text
