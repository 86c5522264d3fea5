"""What bench_vs_fuxictr.py and its two peers share: the settings both sides run, memory
measurement, latency percentiles, machine facts.

Standard library only: ``ours_peer.py`` imports it from the project's ``.venv`` and
``fuxictr_peer.py`` from ``benchmarks/.fuxictr-venv``, so both read the very same dataset
fields and hyperparameters from here. Each peer prints one JSON object with this schema::

    {"impl": "finalmlp" | "fuxictr", "versions": {...}, "dataset": str, "threads": int,
     "num_parameters": int,
     "preprocess": {"rows", "seconds", "rows_per_s", "peak_mem_mb", "self_hwm_mb",
                    "tree_pss_peak_mb", "processes"},
     "train":      {"steps", "samples", "seconds", "samples_per_s", "last_loss",
                    "peak_mem_mb", ...},
     "inference":  {"rows", "batch_size", "seconds", "rows_per_s", ...},
     "latency":    {"calls", "p50_ms", "p99_ms", "mean_ms"}}
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DATASETS = ("frappe_x1", "criteo-like")
SPLITS = ("train", "valid", "test")
FEATURES_FILE = "features.json"  # written beside the criteo-like CSVs by the driver
FRAPPE_FIELDS = (
    "user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country",
    "city",
)  # fmt: skip
INFERENCE_BATCH = 4096


@dataclass(frozen=True)
class Column:
    """One input column: ``categorical`` (vocabulary, values seen fewer than ``min_count``
    times in train share the OOV id) or ``numeric`` (standardised, embedded as value x vector)."""

    name: str
    kind: str
    min_count: int = 1


@dataclass(frozen=True)
class BenchSpec:
    """Data and hyperparameters, identical for both implementations."""

    dataset: str
    fields: tuple[Column, ...]
    label: str = "label"
    embedding_dim: int = 10
    mlp1: tuple[int, ...] = (400,)
    mlp1_dropout: float = 0.4
    mlp2: tuple[int, ...] = (100,)
    mlp2_dropout: float = 0.4
    batch_norm: bool = True
    fs_hidden: tuple[int, ...] = (400,)
    fs1_context: tuple[str, ...] = ()
    fs2_context: tuple[str, ...] = ()
    num_heads: int = 1
    batch_size: int = 4096
    learning_rate: float = 1e-3
    embedding_l2: float = 0.0
    max_grad_norm: float = 10.0
    seed: int = 2021

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_spec(dataset: str, data_dir: Path) -> BenchSpec:
    """The settings of ``dataset``; its CSVs (train/valid/test.csv) lie in ``data_dir``.

    frappe_x1: the paper's Frappe_x1 FinalMLP (as configs/frappe_x1.yaml). criteo-like: the
    FinalMLP Criteo settings of bench_distributed.py (mlp1 [400]*3, mlp2 [800], gates [800]
    over I1-I13 / C6 as in BARS, here n0-n12 / c5; 10 heads); its fields come from
    ``data_dir/features.json``, which the driver writes from the project's generator.
    """
    if dataset == "frappe_x1":
        return BenchSpec(
            dataset=dataset,
            fields=tuple(Column(name, "categorical") for name in FRAPPE_FIELDS),
            fs1_context=("user",),
            fs2_context=("item",),
            num_heads=5,
            embedding_l2=0.05,
        )
    if dataset == "criteo-like":
        raw = json.loads((data_dir / FEATURES_FILE).read_text())
        fields = tuple(Column(f["name"], f["kind"], int(f.get("min_count", 1))) for f in raw)
        numeric = tuple(f.name for f in fields if f.kind == "numeric")
        return BenchSpec(
            dataset=dataset,
            fields=fields,
            mlp1=(400, 400, 400),
            mlp1_dropout=0.2,
            mlp2=(800,),
            mlp2_dropout=0.2,
            fs_hidden=(800,),
            fs1_context=numeric,
            fs2_context=("c5",),
            num_heads=10,
            embedding_l2=1e-5,
        )
    raise SystemExit(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def split_paths(data_dir: Path) -> dict[str, Path]:
    paths = {name: data_dir / f"{name}.csv" for name in SPLITS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing data files: {missing}")
    return paths


def count_csv_rows(path: Path) -> int:
    """Data rows of a CSV with a header line (newlines minus one)."""
    count = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 24):
            count += chunk.count(b"\n")
    return count - 1


# ----------------------------------------------------------------------------- memory
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (Ray's raylet, GCS and workers are among them)."""
    children, tree, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class PeakMemory:
    """Peak memory while a ``with`` block runs, of this process and of its process tree.

    - ``self_hwm_mb``: this process's peak resident set (VmHWM, the ``maxrss`` of getrusage),
      reset at the start of the block through ``/proc/self/clear_refs`` so each stage has its
      own peak (when the kernel refuses the reset it is the peak since process start);
    - ``tree_pss_peak_mb``: the largest sum of proportional set sizes (PSS) over this process
      and every descendant, sampled every ``interval_s``. PSS splits shared pages (Ray's
      object store in /dev/shm, shared libraries) among the processes mapping them, so the
      sum counts each page once;
    - ``peak_mem_mb``: the larger of the two, the figure compared.
    """

    interval_s: float = 0.2
    self_hwm_mb: float = 0.0
    tree_pss_peak_mb: float = 0.0
    processes: int = 1
    hwm_reset: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def peak_mem_mb(self) -> float:
        return max(self.self_hwm_mb, self.tree_pss_peak_mb)

    def _sample(self) -> None:
        tree = process_tree(os.getpid())
        self.processes = max(self.processes, len(tree))
        total_kb = sum(_pss_kb(pid) for pid in tree)
        self.tree_pss_peak_mb = max(self.tree_pss_peak_mb, total_kb / 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakMemory:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            self.hwm_reset = False
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self.self_hwm_mb = _status_kb("VmHWM") / 1024

    def report(self) -> dict[str, Any]:
        return {
            "peak_mem_mb": round(self.peak_mem_mb, 1),
            "self_hwm_mb": round(self.self_hwm_mb, 1),
            "tree_pss_peak_mb": round(self.tree_pss_peak_mb, 1),
            "processes": self.processes,
            "hwm_reset": self.hwm_reset,
        }


# ----------------------------------------------------------------------------- timing
def latency_ms(call: Callable[[int], object], calls: int, warmup: int = 50) -> dict[str, Any]:
    """Wall time of ``call(i)`` for i in range(calls), after ``warmup`` untimed calls."""
    for i in range(warmup):
        call(i)
    times = []
    for i in range(calls):
        tick = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - tick) * 1e3)
    cuts = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times * 99
    return {
        "calls": calls,
        "p50_ms": round(statistics.median(times), 4),
        "p99_ms": round(cuts[98], 4),
        "mean_ms": round(statistics.fmean(times), 4),
    }


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else float("nan")


def machine() -> dict[str, Any]:
    cpu, simd = platform.processor(), []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        info = dict(line.split(":", 1) for line in cpuinfo.read_text().splitlines() if ":" in line)
        info = {key.strip(): value.strip() for key, value in info.items()}
        cpu = " ".join(
            f"{label} {info[key]}"
            for key, label in (("model name", ""), ("cpu family", "family"), ("model", "model"))
            if key in info
        ).strip()
        flags = set(info.get("flags", "").split())
        simd = [flag for flag in ("avx2", "fma", "avx512f", "amx_tile") if flag in flags]
    memory_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kb = int(line.split()[1])
    return {
        "cpu": cpu,
        "simd": simd,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def write_result(result: dict[str, Any], out: Path | None) -> None:
    """Print the result as one JSON line and, with ``out``, write it there too."""
    text = json.dumps(result)
    print(text, flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def peer_env(threads: int) -> dict[str, str]:
    """The environment of a peer process: every thread pool limited to ``threads``, Ray's
    usage reporting off."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "POLARS_MAX_THREADS"):
        env[key] = str(threads)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env
