"""Bounded fuzz run of the HTTP service and the file readers: client mistakes never give a 5xx.

Server: random and malformed request bodies (broken JSON, wrong shapes and types, huge and
non-finite numbers, deeply nested values, invalid UTF-8, oversized bodies, unknown fields)
sent in-process through FastAPI's TestClient to every endpoint; no 200 may hold a score that is
not finite. Hostile classes (issue 18, `fuzz_hostile.py`): huge numbers with A/B feedback, stalled
connections against uvicorn, broken bundles on reload, unusable API keys, non-JSON and gzip
bodies, floods of tiny records, invalid requests among concurrent ones, huge echoed input,
integers of hundreds of digits, and a record's score alone vs in micro-batches. The numeric
classes need numeric fields: with a bundle that has none (Frappe), a small synthetic run is
trained for them (or give `--numeric-bundle`). Readers: random byte files (truncated, binary,
mixed separators, non-UTF-8) read with `read_file`; anything but a clear FinalMLPError (one
`error:` line in the CLI) is a crash.

Usage:
    .venv/bin/python benchmarks/fuzz_inputs.py --bundle runs/frappe --requests 10000 \
        --files 500 --seconds 120 --out docs/results/fuzz.json
    # the readers alone, with a config's data section instead of a run (no training):
    .venv/bin/python benchmarks/fuzz_inputs.py --readers-only --config configs/frappe_x1.yaml
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import fuzz_hostile
from fastapi.testclient import TestClient

from finalmlp.bundle import load_run
from finalmlp.config import load_config
from finalmlp.data.readers import read_file
from finalmlp.errors import FinalMLPError
from finalmlp.schema import DataConfig
from finalmlp.serve.ab import Arm
from finalmlp.serve.app import create_app, load_arms
from finalmlp.serve.settings import ServeSettings

ENDPOINTS = ("/v1/predict", "/v1/feedback", "/v1/admin/reload")
ODD_VALUES: list[Any] = [
    None, True, 0, -1, 1e308, -1e308, 10**40, "", " ", "NaN", "inf", "\u0000", "x" * 5000,
    "\ud83d\ude00", [], {}, [1, [2, [3]]], {"a": {"b": {"c": 1}}}, 3.5, "1005", "Peru",
    1e21, -3e20, "3e38", 3e38, 10**400,
]  # fmt: skip


def random_value(rng: random.Random, depth: int = 0) -> Any:
    if depth < 40 and rng.random() < 0.15:  # deeply nested values
        return (
            [random_value(rng, depth + 1)]
            if rng.random() < 0.5
            else {"k": random_value(rng, depth + 1)}
        )
    return rng.choice(ODD_VALUES)


def random_body(rng: random.Random, fields: list[str]) -> bytes:
    kind = rng.randrange(8)
    if kind == 7:  # more records than max_batch, without building them
        return json.dumps({"records": [{}] * 5000}).encode()
    if kind == 0:  # broken JSON / invalid bytes
        return rng.choice([b"{", b"[1,2", b"\xff\xfe\x00", b"null", b"", b'{"records": ]}'])
    if kind == 1:
        return json.dumps(random_value(rng)).encode()
    records = []
    for _ in range(rng.choice([0, 1, 2, 5, 50])):
        names = rng.sample(fields, k=rng.randint(0, len(fields))) + rng.choice([[], ["bogus"]])
        records.append({n: random_value(rng) for n in names})
    body: dict[str, Any] = {"records": records if kind != 2 else random_value(rng)}
    if kind == 3:
        body = {"request_id": random_value(rng), "outcomes": random_value(rng)}
    if kind == 4:
        body["key"] = random_value(rng)
    text = json.dumps(body, allow_nan=True)
    return text.encode() if kind != 5 else (text * 200).encode()  # oversized


def fuzz_server(bundle: Path, requests: int, seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    arms = load_arms([Arm("default", bundle, 1.0)])
    app = create_app(arms, ServeSettings())
    fields = [f.name for f in arms[0].scorer.fields]
    statuses: dict[str, int] = {}
    server_errors, crashes, sent, nonfinite = 0, 0, 0, 0
    deadline = time.monotonic() + seconds
    with TestClient(app, raise_server_exceptions=False) as client:
        while sent < requests and time.monotonic() < deadline:
            endpoint = rng.choice(ENDPOINTS[:2]) if rng.random() < 0.98 else ENDPOINTS[2]
            try:
                reply = client.post(endpoint, content=random_body(rng, fields),
                                    headers={"content-type": "application/json"})  # fmt: skip
            except Exception:  # the app died under a request
                crashes += 1
                continue
            finally:
                sent += 1
            statuses[str(reply.status_code)] = statuses.get(str(reply.status_code), 0) + 1
            server_errors += reply.status_code >= 500
            if reply.status_code == 200 and endpoint == "/v1/predict":
                scores = reply.json()["predictions"]
                nonfinite += sum(not (isinstance(p, float) and math.isfinite(p)) for p in scores)
        healthy = client.get("/healthz").status_code == 200
    return {"requests": sent, "status_counts": statuses, "5xx": server_errors,
            "crashes": crashes, "nonfinite_scores": nonfinite,
            "healthy_after": healthy}  # fmt: skip


def fuzz_hostile_classes(bundle: Path, numeric: Path, seed: int) -> dict[str, Any]:
    """Each class of issue 18, tried and counted (see fuzz_hostile.py)."""
    rng = random.Random(seed)
    plain = TestClient(create_app(load_arms([Arm("default", bundle)]), ServeSettings()))
    with_numbers = TestClient(create_app(load_arms([Arm("default", numeric)]), ServeSettings()))
    started = time.monotonic()
    report = {
        "1_huge_numbers": fuzz_hostile.huge_numbers(numeric, rng, 300),
        "2_stalled_connections": fuzz_hostile.stalled_connections(bundle, 60),
        "3_broken_reloads": fuzz_hostile.broken_reloads(bundle, 4),
        "4_api_keys": fuzz_hostile.api_keys(),
        "5_content_types": fuzz_hostile.content_types(plain, rng, 300),
        "6_floods": fuzz_hostile.floods(plain),
        "7_invalid_in_micro_batches": fuzz_hostile.invalid_in_batches(bundle, 300),
        "8_echoed_input": fuzz_hostile.echoes(plain),
        "9_huge_integers": fuzz_hostile.huge_integers(with_numbers),
        "10_batch_consistency": fuzz_hostile.batch_consistency(bundle),
    }
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def fuzz_readers(config: DataConfig, files: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    header = "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city\n"
    good = "1,8,305,afternoon,sunday,weekend,home,free,sunny,Canada,129\n"
    outcomes = {"read": 0, "user_error": 0, "crash": 0}
    crashes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(files):
            data = (header + good * rng.randint(0, 5)).encode()
            cut = rng.randint(0, len(data))
            noise = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
            data = data[:cut] + noise + data[cut:] if rng.random() < 0.7 else data[:cut]
            path = Path(tmp) / f"f{i}.csv"
            path.write_bytes(data)
            try:
                read_file(path, config)
                outcomes["read"] += 1
            except FinalMLPError:
                outcomes["user_error"] += 1
            except Exception as exc:  # anything else would be a traceback for the user
                outcomes["crash"] += 1
                crashes.append(f"{type(exc).__name__}: {exc}"[:200])
    return {"files": files, **outcomes, "crash_examples": crashes[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="the run to serve (and whose data to read)")
    parser.add_argument("--config", type=Path, help="read files with this config's data section")
    parser.add_argument("--readers-only", action="store_true", help="only fuzz the readers")
    parser.add_argument(
        "--numeric-bundle", type=Path, help="a run with numeric fields (default: trained)"
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.bundle is None and (args.config is None or not args.readers_only):
        parser.error("give --bundle, or --readers-only with --config")
    started = time.monotonic()
    data = (load_config(args.config) if args.config else load_run(args.bundle).config).data
    report: dict[str, Any] = {}
    if not args.readers_only:
        report["server"] = fuzz_server(args.bundle, args.requests, args.seconds, args.seed)
    report["readers"] = fuzz_readers(data, args.files, args.seed)
    report["seconds"] = round(time.monotonic() - started, 1)
    if args.readers_only:
        return _write_report(report, args.out)
    with tempfile.TemporaryDirectory() as tmp:
        numeric = args.numeric_bundle
        has_numbers = any(
            f.kind == "numeric" for f in load_arms([Arm("x", args.bundle)])[0].scorer.fields
        )
        if numeric is None:
            numeric = args.bundle if has_numbers else fuzz_hostile.numeric_bundle(Path(tmp))
        report["hostile"] = fuzz_hostile_classes(args.bundle, numeric, args.seed)
    _write_report(report, args.out)


def _write_report(report: dict[str, Any], out: Path | None) -> None:
    print(json.dumps(report, indent=2))
    if out is not None:
        out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
