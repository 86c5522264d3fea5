"""Read CSV/TSV, Parquet and libsvm/libFFM files into a checked Polars frame.

Only the columns the config uses are read. Categorical and sequence columns come back as
strings, numeric columns as Float64, the label as Float64 0/1. Every problem is reported with
the file, the line and the column, and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from finalmlp.columns import parse_floats
from finalmlp.errors import DataError, SchemaError
from finalmlp.schema import DataConfig, NumericFeature

LABEL_VALUES = {0.0, 1.0}


def read_file(path: Path, config: DataConfig, *, require_label: bool = True) -> pl.DataFrame:
    """Read one data file as the config describes it.

    Args:
        path: the file (CSV/TSV/Parquet/libsvm/libFFM, per ``config.format``).
        config: the data config (format, columns, label, features).
        require_label: False when scoring unlabelled rows.

    Raises:
        DataError: unreadable, empty, or unparsable values (file, line, column named).
        SchemaError: a column the config needs is not in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found; check the path in the config")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; expected a header and data rows")
    frame = _read_raw(path, config)
    wanted = _wanted_columns(config, frame.columns, require_label)
    _check_present(path, frame.columns, wanted, config)
    frame = frame.select(wanted)
    if frame.height == 0:
        raise DataError(f"{path} has no data rows")
    first_line = 2 if config.has_header and config.format in ("csv", "tsv") else 1
    frame = _parse_numeric(path, frame, config, first_line)
    if config.label in frame.columns:
        frame = frame.with_columns(_parse_label(path, frame[config.label], first_line))
    return frame


def _read_raw(path: Path, config: DataConfig) -> pl.DataFrame:
    fmt = config.format
    try:
        if fmt in ("csv", "tsv"):
            return _read_csv(path, config)
        if fmt == "parquet":
            return pl.read_parquet(path)
        if fmt in ("libsvm", "libffm"):
            from finalmlp.data.libsvm import read_libsvm
            from finalmlp.schema import LibsvmOptions

            options = config.libsvm or LibsvmOptions()
            return read_libsvm(
                path, options, label=config.label, features=config.features, ffm=fmt == "libffm"
            )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {path} as {fmt}: {first}") from None
    raise DataError(f"format {fmt!r} cannot be read from a file ({path})")


def _read_csv(path: Path, config: DataConfig) -> pl.DataFrame:
    separator = config.separator or ("\t" if config.format == "tsv" else ",")
    frame = pl.read_csv(
        path,
        separator=separator,
        has_header=config.has_header,
        infer_schema=False,
        truncate_ragged_lines=False,
    )
    if config.has_header or not config.columns:
        return frame
    # Named here, not via polars' new_columns, which raises its own SchemaError on a mismatch.
    if frame.width != len(config.columns):
        raise DataError(
            f"{path} has {frame.width} columns but data.columns names {len(config.columns)}; "
            "list one name per column"
        )
    return frame.rename(dict(zip(frame.columns, config.columns, strict=True)))


def _wanted_columns(config: DataConfig, available: list[str], require_label: bool) -> list[str]:
    columns = [f.column for f in config.features]
    if require_label or config.label in available:
        columns.insert(0, config.label)
    if config.group is not None and config.group in available:
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
    raise SchemaError(
        f"column(s) {missing} used by data.features not found in {path}; its columns are "
        f"{shown}. Fix the feature names or their `source`"
    )


def _parse_numeric(
    path: Path, frame: pl.DataFrame, config: DataConfig, first_line: int
) -> pl.DataFrame:
    numeric = {f.column for f in config.features if isinstance(f, NumericFeature)}
    for column in numeric:
        frame = frame.with_columns(_to_float(path, frame[column], first_line, "numeric"))
    return frame


def _to_float(path: Path, raw: pl.Series, first_line: int, what: str) -> pl.Series:
    return parse_floats(raw, what, lambda row: f"line {row + first_line:,} of {path}")


def _parse_label(path: Path, raw: pl.Series, first_line: int) -> pl.Series:
    values = _to_float(path, raw, first_line, "a 0/1 label")
    if values.null_count():
        row = int(values.is_null().arg_max() or 0)
        raise DataError(
            f"label column {raw.name!r} is empty on line {row + first_line:,} of {path}; "
            "every training row needs a 0/1 label"
        )
    values = values.replace(-1.0, 0.0)  # libFM convention: -1/1
    bad = ~values.is_in(list(LABEL_VALUES))
    if bad.any():
        row = int(bad.arg_max() or 0)
        raise DataError(
            f"label column {raw.name!r} must hold 0/1 (or -1/1), got {raw[row]!r} on line "
            f"{row + first_line:,} of {path}; binarize the label first"
        )
    return values
