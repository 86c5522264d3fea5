"""Load test of `finalmlp serve`: throughput and p50/p99 latency over loopback HTTP.

The server runs in its own process (`python -m finalmlp.cli.main serve`, 127.0.0.1 only); the
load comes from other processes:

- `wrk` (Debian package; a Lua script cycles through pre-built bodies) for throughput at a fixed
  number of connections, single-record and 256-record requests;
- a small open-loop asyncio driver (this file, `--drive`) for latency at a fixed request rate
  (200 requests/s by default): requests are sent on schedule whatever the replies do, and each
  latency counts from its scheduled time, so a stall shows up in the tail (no coordinated
  omission, which wrk's closed loop has; wrk2 is not in Debian).

Each case runs a few seconds of warm-up, then `--duration` seconds measured. The model: FinalMLP
with the paper's Frappe settings, trained one epoch on the first `--train-rows` rows of
`../shared/data/frappe_x1` (request bodies are its test rows), or the synthetic generator when
that folder is absent. `--bundle` serves an existing run directory instead. `--history N`: a
DIN trained one epoch on the synthetic event log (`synthetic.histories`, `data.history.max_len`
N), each request a record whose two histories (clicked items and their categories) are JSON
lists of N items.

Usage:
    apt-get install -y wrk
    .venv/bin/python benchmarks/bench_serving.py --duration 15 --out docs/results/serving_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAPPE = ROOT.parent / "shared" / "data" / "frappe_x1"
CASES = [  # (name, records per request, wrk connections); fixed-rate cases are added after
    ("single", 1, 1),
    ("single", 1, 16),
    ("batch256", 256, 1),
    ("batch256", 256, 4),
]


# ----------------------------------------------------------------------------- bundle and rows
def train_bundle(folder: Path, train_rows: int) -> Path:
    """A FinalMLP run directory (paper's Frappe settings, 1 epoch on a subset)."""
    import polars as pl
    import yaml

    from finalmlp.config import parse_config
    from finalmlp.train.run import train_from_config

    raw = yaml.safe_load((ROOT / "configs" / "frappe_x1.yaml").read_text())
    raw["train"].update(max_epochs=1, progress=False)
    data: dict[str, Any] = {"cache_dir": str(folder / "cache")}
    if FRAPPE.is_dir():
        for split, rows in (("train", train_rows), ("valid", 20_000), ("test", 20_000)):
            frame = pl.read_csv(FRAPPE / f"{split}.csv", infer_schema=False)
            frame.sample(min(rows, frame.height), seed=1).write_csv(folder / f"{split}.csv")
            data[split] = str(folder / f"{split}.csv")
        raw["data"].update(data)
    else:
        raw["data"] = {"recipe": "synthetic", "synthetic": {"num_rows": train_rows}, **data}
        raw["model"].update(fs1_context=["c0"], fs2_context=[])
    out = folder / "run"
    train_from_config(parse_config(raw, base_dir=ROOT / "configs"), out)
    return out


def train_history_bundle(folder: Path, train_rows: int, max_len: int) -> Path:
    """A DIN run directory on the synthetic event log, histories of up to ``max_len`` items."""
    from finalmlp.config import parse_config
    from finalmlp.data.synthetic_history import event_log_config
    from finalmlp.train.run import train_from_config

    history = {**event_log_config()["history"], "max_len": max_len}
    raw = {
        "data": {
            "recipe": "synthetic",
            "synthetic": {"num_rows": train_rows, "histories": True},
            "history": history,
            "cache_dir": str(folder / "cache"),
        },
        "model": {"name": "din"},
        "train": {"max_epochs": 1, "progress": False},
    }
    out = folder / "run"
    train_from_config(parse_config(raw), out)
    return out


def history_rows(count: int, length: int, seed: int = 99) -> list[dict[str, Any]]:
    """Records of the synthetic event log, each with ``length`` earlier clicked items and their
    categories as JSON lists (most recent last)."""
    from finalmlp.data.synthetic_history import (
        ITEMS_PER_CATEGORY,
        NUM_CATEGORIES,
        generate_event_log,
    )
    from finalmlp.schema import SyntheticOptions

    rng = np.random.default_rng(seed)
    frame = generate_event_log(SyntheticOptions(num_rows=count, seed=seed, histories=True))
    rows = []
    for record in frame.select("user", "item", "category").to_dicts():
        category = rng.integers(0, NUM_CATEGORIES, length)
        item = category * ITEMS_PER_CATEGORY + rng.integers(0, ITEMS_PER_CATEGORY, length)
        record["hist_item"] = [f"i{i}" for i in item]
        record["hist_category"] = [f"k{c}" for c in category]
        rows.append(record)
    return rows


def request_rows(bundle: Path, count: int) -> list[dict[str, Any]]:
    """Raw records to send: Frappe test rows, or synthetic rows matching the bundle."""
    import polars as pl

    from finalmlp.bundle import load_run

    run = load_run(bundle)
    columns = run.processor.columns
    if FRAPPE.is_dir() and set(columns) <= set(pl.read_csv(FRAPPE / "test.csv", n_rows=1).columns):
        frame = pl.read_csv(FRAPPE / "test.csv", infer_schema=False, n_rows=count)
    else:
        from finalmlp.data.synthetic import generate_synthetic
        from finalmlp.schema import SyntheticOptions

        frame = generate_synthetic(SyntheticOptions(num_rows=count, seed=99))
    return frame.select(columns).to_dicts()


def bodies(rows: list[dict[str, Any]], size: int, count: int) -> list[str]:
    return [
        json.dumps({"records": [rows[(i * size + j) % len(rows)] for j in range(size)]})
        for i in range(count)
    ]


# ----------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    bundle: Path, port: int, mode: str, threads: int, log: Path, ab_log: Path | None
) -> subprocess.Popen[bytes]:
    """``mode``: ``off`` (no micro-batching) or ``onN`` (micro-batching, N workers)."""
    flags = ["--no-micro-batch"] if mode == "off" else ["--micro-batch", "--workers", mode[2:]]
    command = [sys.executable, "-m", "finalmlp.cli.main", "serve", str(bundle)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--max-batch", "1024"]
    command += [*flags, "--threads", str(threads)]
    if ab_log is not None:
        command += ["--ab-log", str(ab_log)]
    with log.open("ab") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=sink)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("server did not answer /healthz within 60 s")


# ----------------------------------------------------------------------------- wrk
def lua_script(folder: Path, name: str, payloads: list[str]) -> Path:
    items = ",\n".join(f"[==[{p}]==]" for p in payloads)
    script = f"""
local bodies = {{ {items} }}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, "/v1/predict", nil, bodies[i])
end
"""
    path = folder / f"{name}.lua"
    path.write_text(script)
    return path


def run_wrk(port: int, script: Path, connections: int, seconds: float) -> dict[str, Any]:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", text, re.MULTILINE))
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)$", text, re.MULTILINE)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p90_ms": _ms(latency["90"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(failed.group(1)) if failed else 0,
        "socket_errors": errors.group(1) if errors else None,
        "command": " ".join(command),
    }


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


# ----------------------------------------------------------------------------- fixed rate
FLOOD_RECORDS = 4_190_000  # item 6 of issue 18: `{"records": [0, 0, ...]}`, 8.4 MB


def flood_body() -> bytes:
    """Millions of tiny records in one body just under the 8 MiB default limit (a 413)."""
    return b'{"records":[' + b"0," * (FLOOD_RECORDS - 1) + b"0]}"


def _http(body: bytes) -> bytes:
    return (
        b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool]:
    """Send one request, read its reply: (status, whether the connection stays usable)."""
    writer.write(request)
    status = int((await reader.readline()).split()[1])
    length, keep = 0, True
    while (line := await reader.readline()) not in (b"\r\n", b""):
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
        elif lower.startswith(b"connection:") and b"close" in lower:
            keep = False
    await reader.readexactly(length)
    return status, keep


async def drive(
    port: int,
    payloads: list[str],
    rate: float,
    seconds: float,
    invalid: list[str] | None = None,
    invalid_fraction: float = 0.0,
    flood_every: float = 0.0,
) -> dict[str, Any]:
    """Open loop: request i is due at start + i / rate; latency counts from when it was due.

    ``invalid_fraction`` of the requests (a seeded draw) carry a body from ``invalid`` (a bad
    record: 422 expected); latencies of valid and invalid requests are kept apart. With
    ``flood_every`` > 0, a body of millions of tiny records is sent every that many seconds on a
    connection of its own (413 expected), alongside.
    """
    import random

    loop = asyncio.get_running_loop()
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(64):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    requests = [_http(p.encode()) for p in payloads]
    bad_requests = [_http(p.encode()) for p in invalid or []]
    draw = random.Random(7)
    total = int(rate * seconds)
    is_bad = [bool(bad_requests) and draw.random() < invalid_fraction for _ in range(total)]
    latencies: dict[bool, list[float]] = {False: [], True: []}
    statuses: dict[bool, dict[int, int]] = {False: {}, True: {}}

    async def one(index: int, due: float) -> None:
        await asyncio.sleep(max(0.0, due - loop.time()))
        reader, writer = await pool.get()
        bad = is_bad[index]
        source = bad_requests if bad else requests
        status, keep = await _exchange(reader, writer, source[index % len(source)])
        latencies[bad].append(loop.time() - due)
        statuses[bad][status] = statuses[bad].get(status, 0) + 1
        if not keep:
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        pool.put_nowait((reader, writer))

    flood: dict[str, Any] = {"sent": 0, "statuses": {}, "latency_ms": []}

    async def flooder(stop_at: float) -> None:
        request = _http(flood_body())
        while loop.time() < stop_at:
            began = loop.time()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                status, _ = await _exchange(reader, writer, request)
            except (ConnectionError, IndexError, asyncio.IncompleteReadError):
                status = 0  # the server closed the connection without an answer
            writer.close()
            flood["sent"] += 1
            flood["statuses"][status] = flood["statuses"].get(status, 0) + 1
            flood["latency_ms"].append(round((loop.time() - began) * 1e3, 1))
            await asyncio.sleep(max(0.0, began + flood_every - loop.time()))

    start = loop.time() + 0.2
    jobs = [one(i, start + i / rate) for i in range(total)]
    if flood_every > 0:
        jobs.append(flooder(start + seconds))
    await asyncio.gather(*jobs)
    elapsed = loop.time() - start
    ms = np.asarray(latencies[False]) * 1e3
    result: dict[str, Any] = {
        "rps": total / elapsed,
        "target_rps": rate,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "non_2xx": sum(n for s, n in statuses[False].items() if s != 200),
        "requests": total,
        "valid_requests": len(latencies[False]),
    }
    if bad_requests:
        bad_ms = np.asarray(latencies[True]) * 1e3
        result["invalid_fraction"] = invalid_fraction
        result["invalid_requests"] = len(bad_ms)
        result["invalid_statuses"] = {str(k): v for k, v in statuses[True].items()}
        if len(bad_ms):
            result["invalid_p50_ms"] = float(np.percentile(bad_ms, 50))
            result["invalid_p99_ms"] = float(np.percentile(bad_ms, 99))
    if flood_every > 0:
        flood["statuses"] = {str(k): v for k, v in flood["statuses"].items()}
        result["flood"] = flood
    return result


def run_driver(
    port: int,
    payload_file: Path,
    rate: float,
    seconds: float,
    invalid_file: Path | None = None,
    invalid_fraction: float = 0.0,
    flood_every: float = 0.0,
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--drive",
        str(port),
        "--payloads",
        str(payload_file),
        "--rate",
        str(rate),
        "--duration",
        str(seconds),
    ]
    if invalid_file is not None:
        command += ["--invalid-payloads", str(invalid_file), "--invalid-fraction"]
        command += [str(invalid_fraction)]
    if flood_every > 0:
        command += ["--flood-every", str(flood_every)]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    result["command"] = f"bench_serving.py --drive (open loop, {rate:g} requests/s)"
    return result


def invalid_bodies(rows: list[dict[str, Any]], count: int) -> list[str]:
    """Single-record bodies whose first field holds an object (a 422: record 0, that field)."""
    bad = []
    for i in range(count):
        record = dict(rows[i % len(rows)])
        first = next(iter(record))
        bad.append(json.dumps({"records": [{**record, first: {"bad": i}}]}))
    return bad


# ----------------------------------------------------------------------------- main
def measure(
    args: argparse.Namespace, bundle: Path, rows: list[dict[str, Any]], folder: Path, mode: str
) -> list[dict[str, Any]]:
    port = free_port()
    log = folder / "server.log"
    ab_log = folder / "ab.jsonl" if args.ab_log else None
    server = start_server(bundle, port, mode, args.threads, log, ab_log)
    results = []
    try:
        for name, size, connections in [] if args.fixed_rate_only else CASES:
            script = lua_script(folder, name, bodies(rows, size, 1000 if size == 1 else 20))
            run_wrk(port, script, connections, args.warmup)
            result = run_wrk(port, script, connections, args.duration)
            results.append({"case": name, "records": size, "connections": connections, **result})
            print(json.dumps(results[-1]), flush=True)
        payload_file = folder / "single.json"
        payload_file.write_text(json.dumps(bodies(rows, 1, 1000)))
        invalid_file = folder / "invalid.json"
        invalid_file.write_text(json.dumps(invalid_bodies(rows, 1000)))
        for rate in args.rates:
            run_driver(port, payload_file, rate, args.warmup)
            for fraction in args.invalid_mix or [None]:
                if fraction is None:
                    result = run_driver(port, payload_file, rate, args.duration)
                    case = f"single @ {rate:g}/s"
                else:
                    result = run_driver(
                        port, payload_file, rate, args.duration, invalid_file, fraction
                    )
                    case = f"single @ {rate:g}/s, {fraction:.0%} invalid"
                results.append({"case": case, "records": 1, **result})
                print(json.dumps(results[-1]), flush=True)
            if args.flood:
                result = run_driver(port, payload_file, rate, args.duration, flood_every=1.0)
                case = f"single @ {rate:g}/s + 1 flood body/s"
                results.append({"case": case, "records": 1, **result})
                print(json.dumps(results[-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        print(log.read_text()[-2000:], file=sys.stderr)
    return [{"mode": mode, "ab_log": args.ab_log, **r} for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="serve this run directory (else train one)")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per case")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each case")
    parser.add_argument("--rates", type=float, nargs="*", default=[200.0])
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["off", "on1", "on2"],
        help="off: no micro-batching; onN: micro-batching with N workers",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of every mode, interleaved")
    parser.add_argument("--threads", type=int, default=1, help="server's torch threads")
    parser.add_argument("--ab-log", action="store_true", help="server logs A/B impressions")
    parser.add_argument("--fixed-rate-only", action="store_true", help="skip the wrk cases")
    parser.add_argument(
        "--invalid-mix",
        type=float,
        nargs="*",
        help="fixed-rate cases with these fractions of invalid requests (e.g. 0 0.1 0.4)",
    )
    parser.add_argument(
        "--flood",
        action="store_true",
        help="fixed-rate case with a body of 4.19M tiny records sent once a second alongside",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="N",
        help="serve a DIN trained on the synthetic event log; records carry N-item histories",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--invalid-payloads", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--invalid-fraction", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--flood-every", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)  # internal: driver process
    parser.add_argument("--payloads", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        payloads = json.loads(args.payloads.read_text())
        invalid = json.loads(args.invalid_payloads.read_text()) if args.invalid_payloads else None
        report = asyncio.run(
            drive(
                args.drive,
                payloads,
                args.rate,
                args.duration,
                invalid,
                args.invalid_fraction,
                args.flood_every,
            )
        )
        print(json.dumps(report))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.history:
            bundle = args.bundle or train_history_bundle(folder, args.train_rows, args.history)
            rows = history_rows(4096, args.history)
        else:
            bundle = args.bundle or train_bundle(folder, args.train_rows)
            rows = request_rows(bundle, 4096)
        results = [
            {"repeat": repeat, **r}
            for repeat in range(args.repeats)
            for mode in args.modes
            for r in measure(args, bundle, rows, folder, mode)
        ]
    report = {
        "benchmark": "serving",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "commit": _commit(),
        "bundle": str(args.bundle)
        if args.bundle
        else f"trained: din, synthetic event log, 1 epoch on {args.train_rows:,} rows"
        if args.history
        else (
            f"trained: frappe_x1 paper settings, 1 epoch on {args.train_rows:,} rows"
            if FRAPPE.is_dir()
            else "trained: synthetic"
        ),
        "history_items_per_record": args.history,
        "duration_s": args.duration,
        "threads": args.threads,
        "ab_log": args.ab_log,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "results": results,
    }
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def table(results: list[dict[str, Any]]) -> str:
    """Median over repeats of each (mode, case): requests/s, rows/s, p50, p99 (worst p99 too)."""
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["mode"], r["case"], r.get("connections", "open loop")), []).append(r)
    lines = [
        "| micro-batching | case | connections | requests/s | rows/s | p50 ms | p99 ms "
        "| worst p99 ms | non-2xx | invalid: p50 / p99 ms, statuses |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (mode, case, connections), runs in groups.items():
        name = "off" if mode == "off" else f"on, {mode[2:]} workers"
        rps = float(np.median([r["rps"] for r in runs]))
        lines.append(
            f"| {name}{' + A/B log' if runs[0]['ab_log'] else ''} | {case} | {connections} | "
            f"{rps:,.0f} | {rps * runs[0]['records']:,.0f} | "
            f"{np.median([r['p50_ms'] for r in runs]):.2f} | "
            f"{np.median([r['p99_ms'] for r in runs]):.2f} | "
            f"{max(r['p99_ms'] for r in runs):.2f} | {sum(r['non_2xx'] for r in runs)} | "
            f"{_side_note(runs)} |"
        )
    return "\n".join(lines)


def _side_note(runs: list[dict[str, Any]]) -> str:
    """Invalid requests' latency (median over runs) and statuses, or the flood bodies' fate."""
    if "invalid_p50_ms" in runs[0]:
        statuses: dict[str, int] = {}
        for r in runs:
            for status, n in r["invalid_statuses"].items():
                statuses[status] = statuses.get(status, 0) + n
        return (
            f"{np.median([r['invalid_p50_ms'] for r in runs]):.2f} / "
            f"{np.median([r['invalid_p99_ms'] for r in runs]):.2f}, {statuses}"
        )
    if "flood" in runs[0]:
        latency = [ms for r in runs for ms in r["flood"]["latency_ms"]]
        statuses = {}
        for r in runs:
            for status, n in r["flood"]["statuses"].items():
                statuses[status] = statuses.get(status, 0) + n
        return f"flood bodies: {statuses}, median {np.median(latency):.0f} ms each"
    return ""


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == "__main__":
    main()
