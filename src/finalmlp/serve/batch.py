"""Batch scoring: stream a CSV/TSV/Parquet file of any size through a run, chunk by chunk.

::

    input file --(finalmlp.serve.chunks: checked, then Polars streaming, only the columns
      used)--> chunk of <= chunk_rows raw rows
      -> numeric columns parsed (errors name the file's line) -> run.processor.transform
      -> backend: PyTorch or ONNX Runtime, both running the served model (gates folded:
         finalmlp.serve.fold) -> probabilities (N, T) float64
      -> the run's calibration (calibration.json), when it has one and it is not turned off
      -> [id columns as read] + score (one task) or score_<task> (several) -> appended to a
         temp file beside the output
    all chunks done -> fsync, rename over the output (a failure leaves no partial output)

Memory holds one chunk (its raw columns, encoded arrays and scores) and the reader's
read-ahead, never the whole file. The file is read with the run's own data config (separator,
header, column names) and encoded by the exact FeatureProcessor training fitted, as
:class:`finalmlp.serve.scorer.Scorer` does for HTTP records.

``backend="auto"`` measures: on the first chunk (from 50,000 rows) it times PyTorch and ONNX
Runtime on the same rows (up to 20,000) and keeps the faster for the rest of the file; the
graph is the run's ``model.onnx`` when it is current, else a temporary export. A smaller
first chunk (a small input, or a small ``chunk_rows``) is not worth the measuring and the
export: it uses ``model.onnx`` when current, else PyTorch.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from finalmlp.bundle import Run, load_run
from finalmlp.errors import ConfigError, DataError
from finalmlp.features.processor import EncodedFeatures
from finalmlp.io import atomic_write
from finalmlp.schema import DataConfig
from finalmlp.serve.chunks import ChunkReader
from finalmlp.serve.fold import serving_model
from finalmlp.serve.onnx import OnnxModel, export_problem, torch_probabilities, write_onnx

Backend = Literal["auto", "torch", "onnx"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
SCORE_COLUMN = "score"
DEFAULT_CHUNK_ROWS = 100_000
MODEL_BATCH_ROWS = 16_384  # rows per model call: large enough for efficient matrix products
AUTO_MIN_ROWS = 50_000  # auto measures only when the first chunk has at least this many rows
AUTO_SAMPLE_ROWS = 20_000  # ... and times each backend on up to this many of them
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")  # input only: Polars reads them as they are


@dataclass
class ScoringReport:
    """What :func:`score_file` did: rows, backend, why, and where the time went (seconds)."""

    rows: int
    backend: str
    choice: str  # how the backend was chosen (auto: the measured rows/s)
    seconds: float = 0.0
    calibration: str = "none"  # the calibration applied after the model
    phases: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            ("load", "check", "read", "encode", "model", "write", "setup"), 0.0
        )
    )

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class ScoringBackend:
    name: str
    predict: Callable[[EncodedFeatures], np.ndarray]  # (N, T) float64 probabilities


def score_file(
    run: Run | str | Path,
    input_file: Path,
    output_file: Path,
    *,
    id_columns: Sequence[str] = (),
    backend: Backend = "auto",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    onnx_threads: int | None = None,
    calibrated: bool = True,
) -> ScoringReport:
    """Score every row of ``input_file`` into ``output_file``: the id columns, then ``score``.

    The output format follows its suffix (.parquet/.pq, .tsv, else CSV); rows keep the input
    order. Written to a temp file and renamed: a failure leaves any earlier output intact.
    Scores go through the run's calibration when it has one, unless ``calibrated=False``.

    Raises:
        ConfigError: a bad option (backend, chunk_rows, id columns clashing or repeated).
        SchemaError: an id or feature column missing from the file.
        DataError: an unreadable file or value (file and line named), or no data rows.
        ExportError: the ONNX backend needed a temporary export, and it failed.
    """
    started = time.perf_counter()
    input_file, output_file = Path(input_file), Path(output_file)
    report = ScoringReport(0, "", "")
    run = run if isinstance(run, Run) else load_run(run)
    score_columns = output_columns(run.tasks)
    _check_options(backend, chunk_rows, id_columns, output_file, score_columns)
    if calibrated and run.calibration is not None:
        report.calibration = run.calibration.method
    report.phases["load"] = time.perf_counter() - started
    config = file_config(run.config.data, input_file)
    chunks = ChunkReader(input_file, config, list(id_columns), chunk_rows)
    tick = time.perf_counter()
    frames = chunks.open()  # checks the file and its columns before anything is written
    report.phases["check"] = time.perf_counter() - tick
    with tempfile.TemporaryDirectory(prefix="finalmlp-score-") as scratch:
        scorer = _ChunkScorer(run, backend, onnx_threads, Path(scratch), report)

        def write(tmp: Path) -> None:
            with _sink(tmp, output_file) as sink:
                for chunk in _timed(frames, report.phases, "read"):
                    ids = [chunk[name] for name in chunks.id_columns]  # as read, unparsed
                    tick = time.perf_counter()
                    parsed = chunks.parse(chunk)
                    report.phases["encode"] += time.perf_counter() - tick
                    scores = scorer.score(parsed)
                    tick = time.perf_counter()
                    columns = [pl.Series(n, scores[:, t]) for t, n in enumerate(score_columns)]
                    sink.write(pl.DataFrame([*ids, *columns]))
                    report.phases["write"] += time.perf_counter() - tick
                    report.rows += len(scores)
            if report.rows == 0:
                raise DataError(f"{input_file} has no data rows")

        atomic_write(output_file, write)
    report.seconds = time.perf_counter() - started
    return report


def file_config(config: DataConfig, path: Path) -> DataConfig:
    """The run's data config for reading ``path``: the format from its suffix (.csv, .tsv,
    .parquet, .pq, also before .gz/.zst), else the config's own (a synthetic recipe's rows are
    CSV)."""
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes.pop()
    fmt = SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        fmt = "csv" if config.format == "synthetic" else config.format
    if fmt == config.format:
        return config
    # A separator set for another format does not apply: the new format's default does.
    return config.model_copy(update={"format": fmt, "separator": None})


def check_backend(backend: str) -> Backend:
    """``backend`` as a :data:`Backend`, or ConfigError naming the choices."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    return cast(Backend, backend)


def output_columns(tasks: Sequence[str]) -> list[str]:
    """The score columns: ``score`` for one task, ``score_<task>`` for each of several."""
    return [SCORE_COLUMN] if len(tasks) == 1 else [f"{SCORE_COLUMN}_{t}" for t in tasks]


def _check_options(
    backend: str,
    chunk_rows: int,
    id_columns: Sequence[str],
    output_file: Path,
    score_columns: Sequence[str] = (SCORE_COLUMN,),
) -> None:
    check_backend(backend)
    if output_file.suffix.lower() in COMPRESSED_SUFFIXES:
        raise ConfigError(
            f"cannot write compressed output {output_file}; name it .csv, .tsv or .parquet "
            "(Parquet is compressed)"
        )
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, got {chunk_rows}")
    for column in score_columns:
        if column in id_columns:
            raise ConfigError(
                f"id column {column!r} would clash with the output column {column!r}; "
                "rename it in the input file"
            )
    repeated = sorted({c for c in id_columns if list(id_columns).count(c) > 1})
    if repeated:
        raise ConfigError(f"id column(s) {repeated} listed more than once")


def _timed(
    frames: Iterator[pl.DataFrame], phases: dict[str, float], key: str
) -> Iterator[pl.DataFrame]:
    """``frames``, adding the time spent producing each to ``phases[key]``."""
    while True:
        tick = time.perf_counter()
        frame = next(frames, None)
        phases[key] += time.perf_counter() - tick
        if frame is None:
            return
        yield frame


# ----------------------------------------------------------------------------- scoring
class _ChunkScorer:
    """Encodes chunks and scores them with the backend chosen on the first one."""

    def __init__(
        self, run: Run, backend: Backend, onnx_threads: int | None, scratch: Path,
        report: ScoringReport,
    ) -> None:  # fmt: skip
        self.run, self.requested, self.onnx_threads = run, backend, onnx_threads
        self.scratch, self.report = scratch, report
        self.backend: ScoringBackend | None = None

    def score(self, chunk: pl.DataFrame) -> np.ndarray:
        """Probabilities (N, T) of a chunk: the backend's, then the run's calibration (if on)."""
        scores = self._model_scores(chunk)
        if self.report.calibration == "none":
            return scores
        tick = time.perf_counter()
        scores = self.run.calibrate(scores)
        self.report.phases["model"] += time.perf_counter() - tick
        return scores

    def _model_scores(self, chunk: pl.DataFrame) -> np.ndarray:
        phases = self.report.phases
        tick = time.perf_counter()
        features = self.run.processor.transform(chunk)
        phases["encode"] += time.perf_counter() - tick
        if self.backend is None:
            tick = time.perf_counter()
            self.backend, head = self._choose(features)
            self.report.backend = self.backend.name
            phases["setup"] += time.perf_counter() - tick
            if head is not None:  # the measurement already scored the first rows
                rest = _rows(features, len(head), features.num_rows)
                tick = time.perf_counter()
                tail = self.backend.predict(rest)
                phases["model"] += time.perf_counter() - tick
                return np.concatenate([head, tail])
        tick = time.perf_counter()
        scores = self.backend.predict(features)
        phases["model"] += time.perf_counter() - tick
        return scores

    def _choose(self, features: EncodedFeatures) -> tuple[ScoringBackend, np.ndarray | None]:
        """The backend, and the scores of the first rows when measuring computed them."""
        served = serving_model(self.run.model)
        torch_backend = ScoringBackend(
            "torch", lambda f: torch_probabilities(served, f, MODEL_BATCH_ROWS)
        )
        if self.requested == "torch":
            self.report.choice = "requested"
            return torch_backend, None
        current = export_problem(self.run.path) is None
        if self.requested == "onnx":
            self.report.choice = "requested" + ("" if current else " (temporary export)")
            return self._onnx(current), None
        if features.num_rows < AUTO_MIN_ROWS:
            name = (
                "ONNX Runtime (model.onnx is current)"
                if current
                else "PyTorch (no current model.onnx)"
            )
            self.report.choice = f"auto: {features.num_rows:,} rows, too few to measure; {name}"
            return (self._onnx(True) if current else torch_backend), None
        return self._measure(features, torch_backend, self._onnx(current), current=current)

    def _onnx(self, current: bool) -> ScoringBackend:
        if current:
            model = OnnxModel.from_run(self.run.path, self.onnx_threads)
        else:
            path = self.scratch / "model.onnx"
            write_onnx(self.run, path)
            model = OnnxModel(path, self.onnx_threads)
        return ScoringBackend("onnx", lambda f: model.predict(f, MODEL_BATCH_ROWS))

    def _measure(
        self, features: EncodedFeatures, *backends: ScoringBackend, current: bool
    ) -> tuple[ScoringBackend, np.ndarray]:
        sample = _rows(features, 0, min(AUTO_SAMPLE_ROWS, features.num_rows))
        warmup = _rows(features, 0, 256)
        speeds, outputs = {}, {}
        for backend in backends:
            backend.predict(warmup)
            tick = time.perf_counter()
            outputs[backend.name] = backend.predict(sample)
            speeds[backend.name] = sample.num_rows / (time.perf_counter() - tick)
        best = max(backends, key=lambda b: speeds[b.name])
        measured = ", ".join(f"{b.name} {speeds[b.name]:,.0f} rows/s" for b in backends)
        graph = "model.onnx" if current else "a temporary ONNX export"
        self.report.choice = f"auto: {measured} on {sample.num_rows:,} rows ({graph})"
        return best, outputs[best.name]


def _rows(features: EncodedFeatures, start: int, stop: int) -> EncodedFeatures:
    return EncodedFeatures(
        features.categorical[start:stop],
        features.numeric[start:stop],
        tuple(s[start:stop] for s in features.sequences),
    )


# ----------------------------------------------------------------------------- writing
class _Sink:
    """Appends scored chunks to one file (CSV/TSV text, or Parquet row groups)."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.fmt = fmt
        self.handle: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in __exit__
        self.parquet: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.header = True

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "parquet":
            table = frame.to_arrow()
            if self.parquet is None:
                self.schema = table.schema
                self.parquet = pq.ParquetWriter(self.handle, self.schema)
            self.parquet.write_table(table.cast(self.schema))
            return
        separator = "\t" if self.fmt == "tsv" else ","
        frame.write_csv(self.handle, separator=separator, include_header=self.header)
        self.header = False

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.parquet is not None:
            self.parquet.close()
        self.handle.close()


def _sink(tmp: Path, output: Path) -> _Sink:
    suffix = output.suffix.lower()
    fmt = {".parquet": "parquet", ".pq": "parquet", ".tsv": "tsv"}.get(suffix, "csv")
    return _Sink(tmp, fmt)
