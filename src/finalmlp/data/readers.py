"""Read CSV/TSV, Parquet and libsvm/libFFM files into a checked Polars frame.

Only the columns the config uses are read (the label and ``data.group`` only when labels are
required, i.e. not when scoring). Categorical and sequence columns keep the file's dtype (the
FeatureProcessor turns every dtype into the same tokens), numeric columns come back as Float64,
the label as Float64 0/1. Every problem is reported with the file, the line (CSV/TSV) or row
(Parquet, libsvm) and the column, and how to fix it.

CSV/TSV lines must all hold as many fields as the header (or ``data.columns``). Polars would
silently fill a short line with nulls and skip the extra fields of a long one when it reads
only some columns, so one vectorised pass over the lines counts the separators first (about a
third of the reading time); a file with quoted fields spanning several lines is checked with
Python's ``csv`` module instead (slower, exact). A blank line counts as a line with no fields.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import polars as pl

from finalmlp.columns import parse_floats
from finalmlp.errors import DataError, SchemaError
from finalmlp.schema import DataConfig, NumericFeature

LABEL_VALUES = {0.0, 1.0}
_QUOTE = '"'  # Polars' default quote character, used by both CSV readers here
_DUPLICATE = re.compile(r"^(?P<base>.+)_duplicated_\d+$")  # Polars' name for a repeated header


def read_file(path: Path, config: DataConfig, *, require_label: bool = True) -> pl.DataFrame:
    """Read one data file as the config describes it.

    Args:
        path: the file (CSV/TSV/Parquet/libsvm/libFFM, per ``config.format``).
        config: the data config (format, columns, label, group, features).
        require_label: False when scoring: the label (and group) columns are then neither
            needed nor read, so a file whose label is blank or not 0/1 can be scored.

    Raises:
        DataError: unreadable, empty, ragged, or unparsable values (file, line, column named).
        SchemaError: a column the config needs is not in the file.
    """
    path = Path(path)
    _check_is_file(path)
    wanted = _wanted_columns(config, require_label)
    frame = _read_columns(path, config, wanted)
    if frame.height == 0:
        raise DataError(f"{path} has no data rows")
    locate = _locator(path, config)
    frame = _parse_numeric(frame, config, locate)
    if require_label:
        frame = frame.with_columns(_parse_label(path, frame[config.label], locate))
    return frame


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


def _read_columns(path: Path, config: DataConfig, wanted: list[str]) -> pl.DataFrame:
    """The ``wanted`` columns of the file, in that order; raises if one is missing."""
    fmt = config.format
    try:
        if fmt in ("csv", "tsv"):
            return _read_csv(path, config, wanted)
        if fmt == "parquet":
            available = list(pl.read_parquet_schema(path))
            _check_present(path, available, wanted, config)
            return pl.read_parquet(path, columns=wanted)
        if fmt in ("libsvm", "libffm"):
            from finalmlp.data.libsvm import read_libsvm
            from finalmlp.schema import LibsvmOptions

            options = config.libsvm or LibsvmOptions()
            frame = read_libsvm(
                path, options, label=config.label, features=config.features, ffm=fmt == "libffm"
            )
            _check_present(path, frame.columns, wanted, config)
            return frame.select(wanted)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"cannot read {path} as {fmt}: {_first_line(exc)}") from None
    raise DataError(f"format {fmt!r} cannot be read from a file ({path})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------- CSV / TSV
def _read_csv(path: Path, config: DataConfig, wanted: list[str]) -> pl.DataFrame:
    separator = config.separator or ("\t" if config.format == "tsv" else ",")
    header = _csv_header(path, config, separator)
    _check_present(path, header, wanted, config)
    _check_field_counts(path, separator, len(header), config.has_header)
    try:
        frame = pl.read_csv(
            path,
            separator=separator,
            has_header=config.has_header,
            columns=[header.index(c) for c in wanted],
            infer_schema=False,
            truncate_ragged_lines=False,
        )
    except pl.exceptions.ComputeError as exc:
        if "found more fields" in str(exc):  # the counts above missed it: locate it exactly
            _raise_ragged(path, _scan_records(path, separator, len(header), config.has_header))
        raise
    return frame.rename(dict(zip(frame.columns, wanted, strict=True)))


def _csv_header(path: Path, config: DataConfig, separator: str) -> list[str]:
    """Column names: the header line, or ``data.columns`` checked against the first line."""
    first = pl.read_csv(
        path, separator=separator, has_header=config.has_header, n_rows=0, infer_schema=False
    )
    if config.has_header:
        for name in first.columns:
            match = _DUPLICATE.match(name)
            if match and match["base"] in first.columns:
                raise DataError(
                    f"the header of {path} names column {match['base']!r} more than once; "
                    "rename the duplicates so each column has its own name"
                )
        return first.columns
    names = list(config.columns or [])
    if first.width != len(names):
        raise DataError(
            f"{path} has {first.width} columns but data.columns names {len(names)}; "
            "list one name per column"
        )
    return names  # unique: checked by DataConfig


def _check_field_counts(path: Path, separator: str, expected: int, has_header: bool) -> None:
    """Raise on the first line whose number of fields differs from ``expected``.

    Counts separators per line with Polars (streamed); a line with quotes has its quoted parts
    removed first, and an odd number of quotes (a field spanning lines) hands the whole check
    to Python's csv module.
    """
    line = pl.col("line").str.strip_suffix("\r")
    fields = line.str.count_matches(separator, literal=True) + 1
    quoted = line.str.contains(_QUOTE, literal=True)
    blank = line == "" if expected > 1 else pl.lit(False)  # one column: a blank is a value
    unquoted = line.str.replace_all(f"{_QUOTE}[^{_QUOTE}]*{_QUOTE}", "")
    suspects = (
        pl.scan_lines(path, row_index_name="number", row_index_offset=1)
        .filter(pl.col("number") > int(has_header))
        .with_columns(fields=fields, quoted=quoted, blank=blank)
        .filter((pl.col("fields") != expected) | pl.col("quoted") | pl.col("blank"))
        .with_columns(  # on the few suspect lines only: drop the quoted parts, count again
            fields=pl.when(pl.col("blank"))
            .then(0)
            .when(pl.col("quoted"))
            .then(unquoted.str.count_matches(separator, literal=True) + 1)
            .otherwise(pl.col("fields")),
            odd_quotes=line.str.count_matches(_QUOTE, literal=True) % 2 == 1,
        )
        .filter((pl.col("fields") != expected) | pl.col("odd_quotes"))
        .head(1)
        .collect(engine="streaming")  # memory bounded by a chunk of lines, not the file
    )
    if suspects.height == 0:
        return
    if suspects["odd_quotes"][0]:
        found = _scan_records(path, separator, expected, has_header)
        if found is not None:
            _raise_ragged(path, found)
        return
    _raise_ragged(path, (int(suspects["number"][0]), int(suspects["fields"][0]), expected))


def _scan_records(
    path: Path, separator: str, expected: int, has_header: bool
) -> tuple[int, int, int] | None:
    """(line, fields, expected) of the first CSV record with another field count, or None.

    Streams the file with Python's csv module (handles quoted fields spanning lines) and stops
    at the first offending record; the line is where that record starts.
    """
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.reader(handle, delimiter=separator, quotechar=_QUOTE)
            start = 1
            for record in reader:
                blank_value = expected == 1 and not record
                if not (has_header and start == 1) and len(record) != expected and not blank_value:
                    return start, len(record), expected
                start = reader.line_num + 1
    except csv.Error:
        return None
    return None


def _raise_ragged(path: Path, found: tuple[int, int, int] | None) -> NoReturn:
    if found is None:
        raise DataError(
            f"cannot read {path}: some line has more fields than the header; "
            "fix the line or remove it"
        )
    line, fields, expected = found
    what = "is blank" if fields == 0 else f"has {fields} fields"
    raise DataError(
        f"line {line:,} of {path} {what}, expected {expected}; fix the line or remove it"
    )


# ----------------------------------------------------------------------------- columns
def _wanted_columns(config: DataConfig, require_label: bool) -> list[str]:
    columns = [f.column for f in config.features]
    if require_label:
        columns.insert(0, config.label)
        if config.group is not None:
            columns.append(config.group)
    return list(dict.fromkeys(columns))


def _check_present(path: Path, available: list[str], wanted: list[str], config: DataConfig) -> None:
    missing = [c for c in wanted if c not in available]
    if not missing:
        return
    shown = available if len(available) <= 50 else [*available[:50], "..."]
    if config.label in missing:
        raise SchemaError(
            f"label column {config.label!r} not found in {path}; its columns are {shown}. "
            "Set data.label to the column holding 0/1 clicks"
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
def _locator(path: Path, config: DataConfig) -> Callable[[int], str]:
    """Row index (0-based, among data rows) -> where it is in the file, for messages."""
    if config.format in ("csv", "tsv"):
        # Every line is one row (blank and ragged lines are rejected above) unless a quoted
        # field spans lines, the one case where this line number is an estimate.
        first = 2 if config.has_header else 1
        return lambda row: f"line {row + first:,} of {path}"
    return lambda row: f"row {row + 1:,} of {path}"


def _parse_numeric(
    frame: pl.DataFrame, config: DataConfig, locate: Callable[[int], str]
) -> pl.DataFrame:
    numeric = {f.column for f in config.features if isinstance(f, NumericFeature)}
    for column in numeric:
        frame = frame.with_columns(parse_floats(frame[column], "numeric", locate))
    return frame


def _parse_label(path: Path, raw: pl.Series, locate: Callable[[int], str]) -> pl.Series:
    values = parse_floats(raw, "a 0/1 label", locate)
    if values.null_count():
        row = int(values.is_null().arg_max() or 0)
        raise DataError(
            f"label column {raw.name!r} is empty on {locate(row)}; every training row needs "
            "a 0/1 label"
        )
    values = values.replace(-1.0, 0.0)  # libFM convention: -1/1
    bad = ~values.is_in(list(LABEL_VALUES))
    if bad.any():
        row = int(bad.arg_max() or 0)
        raise DataError(
            f"label column {raw.name!r} must hold 0/1 (or -1/1), got {raw[row]!r} on "
            f"{locate(row)}; binarize the label first"
        )
    return values
