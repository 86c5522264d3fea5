"""The classes of issue 18 for benchmarks/fuzz_inputs.py: each is tried and counted.

1 huge numbers (never a non-finite score, the A/B report keeps answering), 2 stalled
connections (dropped in bounded time, descriptors back), 3 broken bundles on reload (409, every
failure counted), 4 empty or space-padded API keys (refused), 5 non-JSON and compressed bodies
(415), 6 floods of tiny records (413 without parsing them all), 7 invalid requests among
concurrent valid ones (never in a micro-batch), 8 huge echoed input (replies stay small),
9 integers of hundreds of digits (422 with record and field), 10 a record's score alone vs in
micro-batches (the largest relative difference).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import os
import random
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from pydantic import ValidationError

from finalmlp.bundle import _hashes
from finalmlp.serve.ab import Arm
from finalmlp.serve.app import Service, create_app, load_arms
from finalmlp.serve.server import serve_in_thread
from finalmlp.serve.settings import ServeSettings

JSON = {"Content-Type": "application/json"}
HUGE_NUMBERS: list[Any] = [1e21, -3e20, "3e38", 3e38, 1e300, -1e300, "1e308", 1e-300, 10**20]


def numeric_bundle(folder: Path) -> Path:
    """A small synthetic run with numeric fields (c0..c3, n0, n1), trained one epoch."""
    from finalmlp.config import parse_config
    from finalmlp.train.run import train_from_config

    synthetic = {"num_rows": 2000, "num_categorical": 4, "num_numeric": 2, "max_cardinality": 50}
    config = parse_config(
        {
            "data": {
                "recipe": "synthetic",
                "synthetic": {**synthetic, "seed": 3},
                "split": {"valid_fraction": 0.2, "test_fraction": 0.2, "seed": 1},
                "cache_dir": str(folder / "cache"),
            },
            "model": {"name": "finalmlp", "embedding_dim": 4, "mlp1": {"hidden_units": [16]},
                      "mlp2": {"hidden_units": [16]}, "fs_hidden_units": [8], "num_heads": 2},
            "train": {"batch_size": 256, "max_epochs": 1, "progress": False, "seed": 1},
        }
    )  # fmt: skip
    train_from_config(config, folder / "numeric_run")
    return folder / "numeric_run"


def _records(client: TestClient, count: int) -> list[dict[str, Any]]:
    fields = client.get("/v1/model").json()["arms"][0]["fields"]
    return [{f["name"]: (0.5 if f["kind"] == "numeric" else "1") for f in fields}] * count


def huge_numbers(bundle: Path, rng: random.Random, tries: int) -> dict[str, Any]:
    """Class 1: numeric values up to 1e308 (and text) with feedback; then the A/B report."""
    statuses: dict[str, int] = {}
    nonfinite = ab_status = 0
    with tempfile.TemporaryDirectory() as tmp:
        settings = ServeSettings(ab_log=Path(tmp) / "ab.jsonl")
        with TestClient(create_app(load_arms([Arm("default", bundle)]), settings)) as client:
            base = _records(client, 1)[0]
            numeric = [k for k, v in base.items() if isinstance(v, float)]
            for _ in range(tries):
                record = {**base, rng.choice(numeric): rng.choice(HUGE_NUMBERS)}
                reply = client.post("/v1/predict", json={"records": [record, base]})
                statuses[str(reply.status_code)] = statuses.get(str(reply.status_code), 0) + 1
                if reply.status_code == 200:
                    body = reply.json()
                    nonfinite += sum(not math.isfinite(p) for p in body["predictions"])
                    client.post("/v1/feedback", json={"request_id": body["request_id"],
                                                      "outcomes": [1, 0]})  # fmt: skip
            ab_status = client.get("/v1/ab").status_code
        with TestClient(create_app(load_arms([Arm("default", bundle)]), settings)) as client:
            replayed = client.get("/v1/ab").status_code  # after a restart: the log replayed
        log_text = (Path(tmp) / "ab.jsonl").read_text()
    return {"requests": tries, "status_counts": statuses, "nonfinite_scores": nonfinite,
            "ab_report_status": ab_status, "ab_report_status_after_restart": replayed,
            "nan_in_log": "NaN" in log_text or "Infinity" in log_text}  # fmt: skip


def stalled_connections(bundle: Path, count: int) -> dict[str, Any]:
    """Class 2: ``count`` connections that send nothing, headers a byte at a time, or half a
    body, against uvicorn with 1 s deadlines; when were they all closed?"""
    settings = ServeSettings(header_timeout_s=1.0, body_timeout_s=1.0)
    app = create_app(load_arms([Arm("default", bundle)]), settings)
    with serve_in_thread(app, settings) as port:
        fds_before = len(os.listdir("/proc/self/fd"))
        sends = [b"", b"POST /v1/predict HTTP/1.1\r\nHo",
                 b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b'Content-Length: 500\r\n\r\n{"records": [']  # fmt: skip
        sockets = []
        start = time.monotonic()
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(sends[i % 3])
            sockets.append(sock)
        fds_open = len(os.listdir("/proc/self/fd"))
        closed_after, answered_408 = [], 0
        for sock in sockets:
            sock.settimeout(30)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            closed_after.append(time.monotonic() - start)
            answered_408 += received.startswith(b"HTTP/1.1 408")
            sock.close()
        time.sleep(0.2)
        fds_after = len(os.listdir("/proc/self/fd"))
    fds = {"before": fds_before, "while_open": fds_open, "after": fds_after}
    return {"connections": count, "deadline_s": 1.0, "answered_408": answered_408,
            "all_closed_within_s": round(max(closed_after), 2), "process_fds": fds}  # fmt: skip


def broken_reloads(bundle: Path, rounds: int) -> dict[str, Any]:
    """Class 3: reload onto a manifest with a \\xff byte, a re-hashed calibration.json of
    ``{"method": ["platt"]}``, and a directory that is no run, ``rounds`` times each."""
    statuses: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        byte = shutil.copytree(bundle, folder / "byte")
        manifest = (byte / "manifest.json").read_bytes()
        (byte / "manifest.json").write_bytes(manifest[:10] + b"\xff" + manifest[10:])
        calibration = shutil.copytree(bundle, folder / "calibration")
        (calibration / "calibration.json").write_text('{"method": ["platt"]}')
        data = json.loads((calibration / "manifest.json").read_text())
        data["content_sha256"], data["format_version"] = _hashes(calibration)[1], 2
        (calibration / "manifest.json").write_text(json.dumps(data))
        link = folder / "current"
        link.symlink_to(bundle)
        client = TestClient(create_app(load_arms([Arm("default", link)]), ServeSettings()),
                            raise_server_exceptions=False)  # fmt: skip
        for target in [byte, calibration, folder] * rounds:
            link.unlink()
            link.symlink_to(target)
            status = client.post("/v1/admin/reload", json={}).status_code
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        counted = [line for line in client.get("/metrics").text.splitlines()
                   if line.startswith('finalmlp_reloads_total{outcome="failed"}')]  # fmt: skip
        still_serving = client.post("/v1/predict", json={"records": _records(client, 1)})
    return {"reloads": 3 * rounds, "status_counts": statuses,
            "failed_counter": float(counted[0].split()[-1]) if counted else 0.0,
            "still_serving": still_serving.status_code == 200}  # fmt: skip


def api_keys() -> dict[str, Any]:
    """Class 4: keys that could never match (empty, outer spaces) are refused at start."""
    refused = 0
    cases = ["", " ", " s3cret", "s3cret ", "\ts3cret"]
    for key in cases:
        try:
            ServeSettings(api_key=key)
        except ValidationError:
            refused += 1
    return {"keys": len(cases), "refused": refused}


def content_types(client: TestClient, rng: random.Random, tries: int) -> dict[str, Any]:
    """Class 5: a valid body sent as text/plain, form, multipart, none, or gzip-compressed."""
    body = json.dumps({"records": _records(client, 1)}).encode()
    kinds: list[tuple[dict[str, str], bytes]] = [
        ({"Content-Type": "text/plain"}, body),
        ({"Content-Type": "application/x-www-form-urlencoded"}, body),
        ({"Content-Type": "multipart/form-data; boundary=x"}, body),
        ({}, body),
        ({**JSON, "Content-Encoding": "gzip"}, gzip.compress(body)),
        (JSON, gzip.compress(body)),
    ]
    statuses: dict[str, int] = {}
    for _ in range(tries):
        headers, content = rng.choice(kinds)
        path = rng.choice(["/v1/predict", "/v1/feedback", "/v1/admin/reload"])
        status = client.post(path, content=content, headers=headers).status_code
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {"requests": tries, "status_counts": statuses}


def floods(client: TestClient) -> dict[str, Any]:
    """Class 6: 4.19M ``0`` records (8.4 MB) and 2.79M ``{}`` records, timed in-process."""
    out = {}
    for name, item, count in (("zeros", b"0", 4_190_000), ("empty_objects", b"{}", 2_790_000)):
        body = b'{"records":[' + (item + b",") * (count - 1) + item + b"]}"
        start = time.perf_counter()
        status = client.post("/v1/predict", content=body, headers=JSON).status_code
        out[name] = {"records": count, "bytes": len(body), "status": status,
                     "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
    return out


def invalid_in_batches(bundle: Path, requests: int) -> dict[str, Any]:
    """Class 7: concurrent single-record requests, every third invalid, one scoring worker."""
    arms = load_arms([Arm("default", bundle)])
    service = Service(arms, ServeSettings(micro_batch_workers=1))
    scorer = arms[0].scorer
    rows_scored: list[int] = []
    real = scorer.score_prepared

    def counting(prepared: Any) -> np.ndarray:
        rows_scored.append(prepared.num_rows)
        return real(prepared)

    scorer.score_prepared = counting  # type: ignore[method-assign]
    good = {f.name: ("1" if f.kind != "numeric" else 0.5) for f in scorer.fields}
    bad = {**good, scorer.fields[0].name: {"bad": 1}}
    batch = [[bad] if i % 3 == 0 else [good] for i in range(requests)]

    async def run_all() -> list[Any]:
        return await asyncio.gather(*(service.score(arms[0], r) for r in batch),
                                    return_exceptions=True)  # fmt: skip

    results = asyncio.run(run_all())
    return {"requests": requests, "invalid": sum(isinstance(r, Exception) for r in results),
            "rows_scored": sum(rows_scored), "model_calls": len(rows_scored)}  # fmt: skip


def echoes(client: TestClient) -> dict[str, Any]:
    """Class 8: 8 MB of unknown field name, value, top-level key: the largest reply."""
    huge = "f" * 8_000_000
    base = _records(client, 1)[0]
    bodies = [{"records": [{**base, huge: 1}]}, {"records": [{**base, next(iter(base)): [huge]}]},
              {"records": [base], huge: 1}]  # fmt: skip
    sizes = [len(client.post("/v1/predict", json=b).content) for b in bodies]
    return {"input_bytes": len(huge), "largest_reply_bytes": max(sizes)}


def huge_integers(client: TestClient) -> dict[str, Any]:
    """Class 9: integers of 401 and 4,000 digits in numeric fields."""
    fields = client.get("/v1/model").json()["arms"][0]["fields"]
    numeric = [f["name"] for f in fields if f["kind"] == "numeric"]
    base = _records(client, 1)[0]
    out = {}
    for digits in (401, 4000):
        text = json.dumps({"records": [base, base]})
        body = text[:-3] + f', "{numeric[0]}": 1{"0" * (digits - 1)}' + "}]}"
        reply = client.post("/v1/predict", content=body.encode(), headers=JSON)
        detail = reply.json()["detail"]
        where = [detail.get("record"), detail.get("field")]
        out[f"{digits}_digits"] = {"status": reply.status_code, "record_and_field": where}
    return out


def batch_consistency(bundle: Path, count: int = 1024) -> dict[str, Any]:
    """Class 10: each record scored alone vs in micro-batches of 2 to 1,024 records."""
    import polars as pl

    from finalmlp.bundle import load_run
    from finalmlp.serve.rowwise import RowScorer

    scorer = RowScorer(load_run(bundle))
    root = Path(__file__).resolve().parents[1]
    frappe = root.parent / "shared" / "data" / "frappe_x1" / "test.csv"
    if frappe.is_file() and all(f.kind != "numeric" for f in scorer.fields):
        records = pl.read_csv(frappe, infer_schema=False, n_rows=count).select(
            [f.name for f in scorer.fields]).to_dicts()  # fmt: skip
    else:
        from finalmlp.data.synthetic import generate_synthetic
        from finalmlp.schema import SyntheticOptions

        frame = generate_synthetic(SyntheticOptions(num_rows=count, seed=99, num_categorical=4,
                                                    num_numeric=2, max_cardinality=50))  # fmt: skip
        records = frame.select([f.name for f in scorer.fields]).to_dicts()
    alone = np.concatenate([scorer.score_records([r]) for r in records])
    worst = {}
    for size in (2, 8, 64, 256, 1024):
        batched = np.concatenate([scorer.score_records(records[i : i + size])
                                  for i in range(0, len(records), size)])  # fmt: skip
        worst[str(size)] = float((np.abs(batched - alone) / np.abs(alone)).max())
    return {"records": len(records), "max_relative_difference_by_batch_size": worst}
