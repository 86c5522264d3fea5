"""Read CSV/TSV, Parquet and libsvm/libFFM files into a checked Polars frame.

Only the columns the config uses are read (the label and ``data.group`` only when labels are
required, i.e. not when scoring). Categorical and sequence columns keep the file's dtype (the
FeatureProcessor turns every dtype into the same tokens), numeric columns come back as Float64,
the label as Float64 0/1 (through ``data.label_map`` when set). Text files may be gzip or zstd
compressed (recognised by their first bytes; Polars decompresses them).

Bad rows follow ``data.on_bad_rows`` (see :mod:`finalmlp.data.badrows`): lines with the wrong
number of fields (:mod:`finalmlp.data.csvlines`), blank lines, repeated header lines, lines that
are not UTF-8, numbers that do not parse or are NaN/inf, empty or unknown labels, malformed
libsvm lines. ``error`` names the file, the line (CSV/TSV/libsvm) or row (Parquet) and the
column, and how to fix it. A clean file takes the fast path: one streamed pass over the lines,
one Polars read, vectorised value checks; only a file with bad lines is copied without them (to
a temporary file) and read again. Scoring (``require_label=False``) always stops at the first
bad row, and keeps NaN/inf as missing values, as the server does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from finalmlp.data.badrows import (
    BAD_ROWS_HINT,
    BadRowReport,
    Policy,
    bad_rows,
    no_bad_rows,
    settle,
)
from finalmlp.data.csvlines import (
    CsvStructure,
    check_field_counts,
    raise_structure,
    scan_records,
    scan_structure,
)
from finalmlp.data.headers import FileHeader, HeaderRule, csv_separator
from finalmlp.data.textlines import (
    LineMap,
    NotUtf8Error,
    RowPlaces,
    Utf8Problem,
    copy_valid_utf8,
    copy_without_lines,
    first_line,
    record_text,
)
from finalmlp.data.values import LABEL_VALUES, apply_checks, parse_values
from finalmlp.errors import DataError, SchemaError
from finalmlp.schema import DataConfig, LibsvmOptions, SequenceFeature

__all__ = ["LABEL_VALUES", "ReadResult", "csv_header", "read_file", "read_table"]

_LIBSVM = ("libsvm", "libffm")
_check_field_counts = check_field_counts  # the batch scorer checks its CSV chunks with it


@dataclass(frozen=True)
class ReadResult:
    """The frame read and the report of the bad rows left out of it."""

    frame: pl.DataFrame
    bad_rows: BadRowReport


def read_file(
    path: Path, config: DataConfig, *, require_label: bool = True, split: str | None = None
) -> pl.DataFrame:
    """Read one data file as the config describes it.

    Args:
        path: the file (CSV/TSV/Parquet/libsvm/libFFM, per ``config.format``).
        config: the data config (format, columns, label, group, features, on_bad_rows).
        require_label: False when scoring: the label (and group) columns are then neither
            needed nor read, so a file whose label is blank or not 0/1 can be scored.
        split: ``train``, ``valid`` or ``test`` when the file is that split (its
            ``data.has_header``; valid/test may take their column names from the train
            file's header), None for another file (its header is detected: ``auto``).

    Raises:
        DataError: unreadable, empty, ragged, or unparsable values (file, line, column named);
            with ``on_bad_rows`` skip/quarantine, only when no good row is left.
        SchemaError: a column the config needs is not in the file.
    """
    return read_table(path, config, require_label=require_label, split=split).frame


def read_table(
    path: Path,
    config: DataConfig,
    *,
    require_label: bool = True,
    split: str | None = None,
    warn: bool = True,
) -> ReadResult:
    """:func:`read_file`, also returning what was done with the bad rows.

    With ``skip``/``quarantine`` a :class:`~finalmlp.data.badrows.BadRowsWarning` says how many
    rows were left out and why (unless ``warn`` is False: a reader thread leaves it to its
    caller); ``quarantine`` writes them to the side file.
    """
    path = Path(path)
    _check_is_file(path)
    policy: Policy = config.on_bad_rows if require_label else "error"
    hint = BAD_ROWS_HINT if require_label else ""
    header = _header_rule(config, split)
    with tempfile.TemporaryDirectory(prefix="finalmlp-read-") as scratch:
        wanted = _wanted_columns(config, require_label, split is not None)
        table = _read_columns(path, config, wanted, policy, hint, Path(scratch), header)
        if table.frame.height == 0 and table.bad.height == 0:
            raise DataError(f"{path} has no data rows")
        frame, bad = _check_values(table, config, require_label, policy, hint)
    report = settle(path, config, policy, bad, warn=warn)
    if frame.height == 0:
        raise DataError(
            f"no good row is left in {path}: all {report.total:,} rows are bad "
            f"({report.summary().split(': ', 1)[1]}); fix the file, or check data.format, "
            "data.separator, data.columns and data.label_map"
        )
    return ReadResult(frame, report)


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(
            f"{path} is a directory, expected a file; point data.train/valid/test (or the "
            "file to score) at one data file"
        )
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found; check the path in the config")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; expected a header and data rows")


# ----------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class _Table:
    """The columns read, where their rows are, and the rows already left out."""

    frame: pl.DataFrame
    places: RowPlaces
    bad: pl.DataFrame


def csv_header(
    path: Path, config: DataConfig, wanted: list[str], split: str | None = None
) -> FileHeader:
    """Whether a CSV/TSV file has a header, and its column names (see
    :mod:`finalmlp.data.headers`); ``split`` None: a file to score, whose header is detected."""
    return _header_rule(config, split).layout(path, csv_separator(config), wanted)


def _header_rule(config: DataConfig, split: str | None) -> HeaderRule:
    return HeaderRule.of(config, split, _wanted_columns(config, True))


def _read_columns(
    path: Path,
    config: DataConfig,
    wanted: list[str],
    policy: Policy,
    hint: str,
    scratch: Path,
    header: HeaderRule,
) -> _Table:
    """The ``wanted`` columns of the file, in that order; raises if one is missing."""
    fmt = config.format
    try:
        if fmt in ("csv", "tsv"):
            return _read_csv(path, config, wanted, policy, hint, scratch, header)
        if fmt == "parquet":
            available = list(pl.read_parquet_schema(path))
            _check_present(path, available, wanted, config)
            frame = pl.read_parquet(path, columns=wanted)
            return _Table(frame, RowPlaces(path, noun="row"), no_bad_rows())
        if fmt in _LIBSVM:
            return _read_libsvm(path, config, wanted, policy, hint, scratch)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"cannot read {path} as {fmt}: {_first_line(exc)}") from None
    raise DataError(f"format {fmt!r} cannot be read from a file ({path})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- UTF-8
def _valid_utf8(
    path: Path,
    policy: Policy,
    hint: str,
    scratch: Path,
    column_of: Callable[[Utf8Problem], str | None],
    has_header: bool = False,
) -> tuple[Path, LineMap, pl.DataFrame]:
    """A copy of ``path`` without its lines that are not UTF-8, where it maps back, and those
    lines as bad rows; raises on the first such line with ``error`` (or in the header)."""
    target = None if policy == "error" else scratch / "utf8.txt"
    problems = copy_valid_utf8(path, target)
    if not problems:  # Polars disagreed with Python's decoder: report Polars' refusal
        raise DataError(f"cannot read {path} as UTF-8; re-encode the file as UTF-8")
    first = problems[0]
    if target is None or (has_header and first.line == 1):
        column = column_of(first)
        where = f" in column {column!r}" if column is not None else ""
        raise DataError(
            f"cannot read line {first.line:,} of {path} as UTF-8: byte "
            f"0x{first.raw[first.offset]:02x} at position {first.offset + 1}{where}; re-encode "
            f"the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`){'' if first.line == 1 else hint}"
        )
    removed = np.array([p.line for p in problems], dtype=np.int64)
    bad = bad_rows(
        removed.tolist(), "not_utf8", [column_of(p) for p in problems], [p.text for p in problems]
    )
    return target, LineMap(removed), bad


def _csv_column(header: list[str], separator: str) -> Callable[[Utf8Problem], str | None]:
    """The column holding a problem's first bad byte (counting separators before it)."""
    sep = separator.encode("utf-8")

    def column_of(problem: Utf8Problem) -> str | None:
        index = problem.raw[: problem.offset].count(sep)
        return header[index] if index < len(header) else None

    return column_of


# ----------------------------------------------------------------------------- CSV / TSV
def _read_csv(
    path: Path,
    config: DataConfig,
    wanted: list[str],
    policy: Policy,
    hint: str,
    scratch: Path,
    rule: HeaderRule,
) -> _Table:
    separator = csv_separator(config)
    layout = rule.layout(path, separator, wanted)
    header, has_header = layout.names, layout.present
    _check_present(path, header, wanted, config)
    header_line = _header_text(path) if has_header else separator.join(header)

    def scan(text: Path) -> CsvStructure:
        return scan_structure(
            text, separator, len(header), has_header, header_line, policy == "error"
        )

    text, utf8, bad = path, LineMap(), no_bad_rows()
    try:
        structure = scan(path)
    except NotUtf8Error:
        column_of = _csv_column(header, separator)
        text, utf8, bad = _valid_utf8(path, policy, hint, scratch, column_of, has_header)
        structure = scan(text)
    source, copy = text, LineMap()
    found = structure.bad
    if found.height:
        if policy == "error":
            raise_structure(path, found.row(0, named=True), len(header), hint)
        source, copy = scratch / "rows.csv", _copy_without(text, found, scratch / "rows.csv")
        raw = found["raw"]
        if policy == "quarantine" and raw.null_count():
            raw = pl.Series(
                record_text(text, found["line"].to_numpy(), found["last_line"].to_numpy())
            )
        lines = utf8.original(found["line"].to_numpy())
        bad = pl.concat([bad, bad_rows(lines.tolist(), found["reason"], None, raw)])
    records = structure.records
    places = RowPlaces(
        path,
        first=2 if has_header else 1,
        lines=None if records is None else records[:, 0],
        last_lines=None if records is None else records[:, 1],
        copy=copy,
        text=text,
        utf8=utf8,
    )
    frame = _polars_csv(source, has_header, separator, header, wanted)
    return _Table(frame, places, bad)


def _copy_without(text: Path, found: pl.DataFrame, target: Path) -> LineMap:
    starts, ends = found["line"].to_numpy(), found["last_line"].to_numpy()
    if (starts == ends).all():  # no quoted field spans lines: one line per record
        return copy_without_lines(text, target, starts)
    removed = np.concatenate([np.arange(s, e + 1) for s, e in zip(starts, ends, strict=True)])
    return copy_without_lines(text, target, removed)


def _polars_csv(
    source: Path, has_header: bool, separator: str, header: list[str], wanted: list[str]
) -> pl.DataFrame:
    try:
        frame = pl.read_csv(
            source,
            separator=separator,
            has_header=has_header,
            columns=[header.index(c) for c in wanted],
            infer_schema=False,
            truncate_ragged_lines=False,
        )
    except pl.exceptions.ComputeError as exc:
        if "found more fields" in str(exc):  # the counts above missed it: locate it exactly
            found = scan_records(source, separator, len(header), has_header, None, True)
            if found.bad.height:
                raise_structure(source, found.bad.row(0, named=True), len(header))
        raise
    return frame.rename(dict(zip(frame.columns, wanted, strict=True)))


def _header_text(path: Path) -> str:
    """The header line as text (a repeated header is a line equal to it)."""
    return first_line(path).decode("utf-8", errors="replace").removeprefix("\ufeff")


# ----------------------------------------------------------------------------- libsvm
def _read_libsvm(
    path: Path, config: DataConfig, wanted: list[str], policy: Policy, hint: str, scratch: Path
) -> _Table:
    from finalmlp.data.libsvm import LibsvmTable, read_libsvm_table

    def read(text: Path) -> LibsvmTable:
        return read_libsvm_table(
            text,
            config.libsvm or LibsvmOptions(),
            label=config.label,
            features=config.features,
            ffm=config.format == "libffm",
            label_map=config.label_map,
            policy=policy,
            hint=hint,
        )

    text, utf8, bad = path, LineMap(), no_bad_rows()
    try:
        table = read(path)
    except NotUtf8Error:
        text, utf8, bad = _valid_utf8(path, policy, hint, scratch, lambda _: None)
        table = read(text)
    _check_present(path, table.frame.columns, wanted, config)
    found = table.bad.with_columns(pl.Series("line", utf8.original(table.bad["line"].to_numpy())))
    places = RowPlaces(path, lines=table.lines, text=text, utf8=utf8)
    return _Table(table.frame.select(wanted), places, pl.concat([bad, found]))


# ----------------------------------------------------------------------------- columns
def _wanted_columns(config: DataConfig, require_label: bool, events: bool = False) -> list[str]:
    """A split of the config (``events``) gives the event columns of histories (data.history);
    another file (scoring, evaluating) each history feature's own column (the history as a list
    or separator-joined text)."""
    if events and config.history is not None:
        histories = _history_columns(config)
        columns = [f.column for f in config.features if f.name not in histories]
        columns += config.history.columns
        columns += list(histories.values())
    else:
        columns = [f.column for f in config.features]
    if events and config.join:  # joined columns come from the lookup tables
        joined = {c for join in config.join for c in join.columns}
        columns = [c for c in columns if c not in joined] + [j.on for j in config.join]
    if require_label:
        columns[:0] = config.label_columns
        if config.group is not None:
            columns.append(config.group)
    return list(dict.fromkeys(columns))


def _check_present(path: Path, available: list[str], wanted: list[str], config: DataConfig) -> None:
    missing = [c for c in wanted if c not in available]
    if not missing:
        return
    shown = available if len(available) <= 50 else [*available[:50], "..."]
    for task in config.tasks:
        if task.column not in missing:
            continue
        if task.allow_missing:
            raise SchemaError(
                f"label column {task.column!r} of task {task.name!r} not found in {path}; its "
                f"columns are {shown}. Fix the task's column in data.labels"
            )
        raise SchemaError(
            f"label column {task.column!r} not found in {path}; its columns are {shown}. "
            "Set data.label to the column holding 0/1 clicks"
        )
    if config.history is not None:
        history = set(config.history.columns) | set(_history_columns(config).values())
        events = [c for c in missing if c in history]
        if events:
            raise SchemaError(
                f"column(s) {events} used by data.history not found in {path}; its columns are "
                f"{shown}. Fix data.history or the features' history: columns"
            )
    feature_columns = {f.column for f in config.features}
    features = [c for c in missing if c in feature_columns]
    if features:
        raise SchemaError(
            f"column(s) {features} used by data.features not found in {path}; its columns are "
            f"{shown}. Fix the feature names or their `source`"
        )
    raise SchemaError(
        f"group column {config.group!r} (data.group) not found in {path}; its columns are "
        f"{shown}. Set data.group to the column holding the user (or query) id, or remove it"
    )


# ----------------------------------------------------------------------------- values
def _check_values(
    table: _Table, config: DataConfig, require_label: bool, policy: Policy, hint: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse numbers and labels; raise on the first bad value, or drop the rows holding one."""
    label = require_label and config.format not in _LIBSVM  # libsvm labels: parsed when read
    frame, checks = parse_values(table.frame, config, label=label, finite=require_label)
    if not checks:
        return frame, table.bad
    frame, found = apply_checks(table.frame, frame, checks, table.places, policy, hint)
    return frame, pl.concat([table.bad, found])


def _history_columns(config: DataConfig) -> dict[str, str]:
    """Feature name -> the event column of each history feature."""
    return {
        f.name: f.history
        for f in config.features
        if isinstance(f, SequenceFeature) and f.history is not None
    }
