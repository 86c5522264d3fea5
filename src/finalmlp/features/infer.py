"""Propose a data config from a raw file (backs ``finalmlp schema infer FILE``).

The first ``sample_rows`` rows are read with Polars, every column as text, and each column is
classified by simple, reviewable rules:

- label: the given column, else one named label/click/clicked/clk/y/target/is_click, else a
  0/1 first column; otherwise :class:`~finalmlp.errors.SchemaError` asks for ``--label``.
- numeric: >= 99% of values parse as numbers and there are more than 20 distinct values, except
  integer codes (leading zeros, an id-like name, or integers spread evenly over their range such
  as user ids), which are categorical. ``transform: log`` for non-negative heavy-tailed values.
- sequence: >= 20% of values hold one of ``^ | ;`` and the tokens repeat across rows.
- categorical: the rest; constant, empty and unique-per-row columns are dropped.

Example:
    >>> result = infer_schema(Path("train.csv"))
    >>> print(result.to_yaml())
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from finalmlp.errors import ConfigError, DataError, SchemaError
from finalmlp.features.proposal import (
    InferredSchema,
    clean_text,
    column_stats,
    config_skeleton,
    render_yaml,
)

__all__ = [
    "InferredSchema",
    "column_stats",
    "config_skeleton",
    "count_rows",
    "infer_data_config",
    "infer_schema",
    "render_yaml",
    "sniff_separator",
]

LABEL_NAMES = ("label", "click", "clicked", "clk", "y", "target", "is_click")
FILE_SEPARATORS = (",", "\t", ";", "|")
SEQUENCE_SEPARATORS = ("^", "|", ";")
NUMERIC_FRACTION = 0.99  # share of values that must parse as numbers
MAX_CATEGORICAL_DISTINCT = 20  # numbers with this few distinct values are categories
SEQUENCE_FRACTION = 0.2  # share of values that must hold the separator
SKEW_RATIO = 100.0  # max > 100 x median: heavy tail, propose a log transform
EVEN_SPREAD_RATIO = 10.0  # max <= 10 x median: integers spread evenly, like ids
# The 21 smallest distinct integers of a quantity (counts, ages) are nearly consecutive: 0, 1,
# 2... Codes skip: 33, 35, 39, 161... Over CODE_GAP_RATIO x as wide as their count: codes.
CODE_GAP_RATIO = 3.0
HASH_SUGGEST_DISTINCT = 1_000_000
HASH_BUCKETS = 2**20
MIN_ROWS_FOR_UNIQUE = 20  # below this a column of distinct values is not evidence of a row id
PROBE_ROWS = 1_000
LARGEST_EXACT_INTEGER = 2.0**53
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w .\-]*$")
_LEADING_ZERO = re.compile(r"^-?0\d")
_ID_NAME = re.compile(r"ids?$|^id_|_id_", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"')


@dataclass(frozen=True)
class _Layout:
    """How a file is laid out: format, separator (text formats) and header."""

    fmt: str
    separator: str | None
    has_header: bool
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Decision:
    """What one column becomes: a feature dict, or None when dropped, and why."""

    feature: dict[str, Any] | None
    note: str


# ----------------------------------------------------------------------------- public API
def infer_data_config(
    path: Path,
    *,
    label: str | None = None,
    fmt: str | None = None,
    has_header: bool | None = None,
    separator: str | None = None,
    sample_rows: int = 200_000,
) -> dict[str, Any]:
    """Propose the ``data:`` section of a config for ``path``; see :func:`infer_schema`."""
    return infer_schema(
        path,
        label=label,
        fmt=fmt,
        has_header=has_header,
        separator=separator,
        sample_rows=sample_rows,
    ).data


def infer_schema(
    path: Path,
    *,
    label: str | None = None,
    fmt: str | None = None,
    has_header: bool | None = None,
    separator: str | None = None,
    sample_rows: int = 200_000,
    field_map: Path | None = None,
    valid: Path | None = None,
    test: Path | None = None,
) -> InferredSchema:
    """Read the head of a CSV/TSV/Parquet/libsvm/libFFM file and propose a data config with
    column stats (for libsvm see :mod:`finalmlp.features.infer_libsvm`).

    Args:
        path: the raw data file.
        label: the label column; guessed when None (by name, else a 0/1 first column).
        fmt: ``csv``, ``tsv``, ``parquet``, ``libsvm`` or ``libffm``; from the suffix and
            first line when None.
        has_header: whether the first line names the columns; guessed when None.
        separator: field separator of a text file; sniffed from the first lines when None.
        sample_rows: how many rows to read.
        field_map: libsvm only: the JSON or featindex.txt file naming each index's field.
        valid, test: the validation and test files (CSV/TSV/Parquet): read as train is (each
            file's header detected), their rows join the sample the columns are typed from,
            and the data section names them. A file whose columns differ is a DataError.

    Raises:
        DataError: the file is missing, empty or unreadable.
        SchemaError: no label column can be found, or no column is usable as a feature.
        ConfigError: ``fmt`` is not a file format this can read.
    """
    path = Path(path)
    if sample_rows < 1:
        raise ConfigError(f"sample_rows must be at least 1, got {sample_rows}")
    from finalmlp.features.infer_libsvm import infer_sparse_schema, sparse_format

    sparse = sparse_format(path, fmt)
    if sparse is not None:
        inferred = infer_sparse_schema(
            path, fmt=sparse, field_map=field_map, label=label, sample_rows=sample_rows
        )
        splits = {name: Path(p) for name, p in (("valid", valid), ("test", test)) if p}
        return replace(inferred, data=_with_splits(inferred.data, splits))
    frame, layout = _read_sample(path, fmt, has_header, separator, sample_rows)
    others = _read_others(path, frame, layout, {"valid": valid, "test": test}, sample_rows)
    notes = (*_sample_notes(path, frame, sample_rows), *layout.notes)
    notes += tuple(
        f"{o.height:,} rows of the {name} file typed with them" for name, o in others.items()
    )
    frame = pl.concat([frame, *others.values()]) if others else frame
    stats = column_stats(frame)
    label_column, label_note = _choose_label(path, frame, label)
    stats[label_column]["note"] = label_note
    features: list[dict[str, Any]] = []
    for name in frame.columns:
        if name == label_column:
            continue
        decision = _infer_column(name, frame[name], layout.separator, frame.height)
        stats[name]["note"] = decision.note
        if decision.feature is not None:
            features.append(decision.feature)
    if not features:
        raise SchemaError(
            f"no column of {path} is usable as a feature (all constant, empty or row ids); "
            f"its columns are {frame.columns}"
        )
    data = _data_section(path, layout, frame.columns, label_column, features)
    if others:
        data = _with_splits(
            data, {name: Path(p) for name, p in (("valid", valid), ("test", test)) if p}
        )
    notes += _criteo_note(layout, frame, label_column)
    rows = frame.height - sum(o.height for o in others.values())
    if rows >= sample_rows:
        rows = count_rows(path, layout.fmt, layout.has_header)
    return InferredSchema(data=data, stats=stats, notes=notes, train_rows=rows)


def count_rows(path: Path, layout_fmt: str, has_header: bool) -> int:
    """Data rows of a file: Parquet's metadata, else its lines (less the header)."""
    if layout_fmt == "parquet":
        return pl.scan_parquet(path).select(pl.len()).collect().item()
    lines, last = 0, b"\n"
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    lines += last != b"\n"  # a last line without a newline
    return max(lines - int(has_header), 0)


# ----------------------------------------------------------------------------- reading
def _read_sample(
    path: Path, fmt: str | None, has_header: bool | None, separator: str | None, rows: int
) -> tuple[pl.DataFrame, _Layout]:
    """Read up to ``rows`` rows of ``path``, every column as text."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found; check the path")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; expected a header and data rows")
    layout = _detect_layout(path, fmt, separator)
    if layout.fmt == "parquet":
        frame, skipped = _read_parquet(path, rows)
        if skipped:
            layout = _Layout("parquet", None, True, (f"nested columns skipped: {skipped}",))
    else:
        sep = layout.separator or ","
        header_note: tuple[str, ...] = ()
        if has_header is None:
            has_header = _looks_like_header(_read_text(path, sep, False, PROBE_ROWS))
            kind = "names the columns" if has_header else "is data (no header)"
            header_note = (f"guessed that the first line {kind}; pass --header/--no-header",)
        frame = _read_text(path, sep, has_header, rows)
        layout = _Layout(layout.fmt, sep, has_header, layout.notes + header_note)
    if frame.height == 0:
        raise DataError(f"{path} has no data rows")
    return frame, layout


def _read_others(
    train: Path,
    frame: pl.DataFrame,
    layout: _Layout,
    files: dict[str, Path | None],
    rows: int,
) -> dict[str, pl.DataFrame]:
    """The valid/test samples, read with train's format and separator (their header detected),
    with train's column names; DataError when a file has other columns."""
    out = {}
    for split, file in files.items():
        if file is None:
            continue
        fmt = layout.fmt if layout.fmt in ("csv", "tsv", "parquet") else None
        other, other_layout = _read_sample(Path(file), fmt, None, layout.separator, rows)
        names = list(other.columns)
        if layout.fmt != "parquet" and not other_layout.has_header:
            names = list(frame.columns)[: other.width]
        if other.width != frame.width or (other_layout.has_header and names != frame.columns):
            raise DataError(
                f"the {split} file {file} has columns {list(other.columns)[:50]}, the train "
                f"file {train} {frame.columns[:50]}; give files of the same columns"
            )
        out[split] = other.rename(dict(zip(other.columns, frame.columns, strict=True)))
    return out


def _with_splits(data: dict[str, Any], files: dict[str, Path]) -> dict[str, Any]:
    """The data section with valid/test files after train (header detected per file)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        out[key] = value
        if key == "train":
            out.update({split: str(p.resolve()) for split, p in files.items()})
    if "has_header" in out:
        out["has_header"] = "auto"  # per file: a header in one and not another is fine
    return out


def _detect_layout(path: Path, fmt: str | None, separator: str | None) -> _Layout:
    """Format from ``fmt`` or the suffix; the separator of a text file from its first lines."""
    if fmt is None and path.suffix.lower() in (".parquet", ".pq"):
        fmt = "parquet"
    if fmt == "parquet":
        return _Layout("parquet", None, True)
    if fmt not in (None, "csv", "tsv"):
        raise ConfigError(
            f"cannot infer a schema for format {fmt!r}; expected csv, tsv, parquet, libsvm "
            "or libffm"
        )
    if separator is None:
        separator = "\t" if fmt == "tsv" else sniff_separator(path)
    if fmt is None:
        fmt = "tsv" if separator == "\t" else "csv"
    return _Layout(fmt, separator, True)


def sniff_separator(path: Path, max_lines: int = 20) -> str:
    """The candidate of ``, TAB ; |`` found most often on the first line (outside quotes),
    preferring one that occurs equally often on the following lines; ``,`` when none occurs."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = [line.rstrip("\r\n") for _, line in zip(range(max_lines), handle, strict=False)]
    lines = [_QUOTED.sub("", line) for line in lines if line.strip()]
    if not lines:
        return ","
    counts = {sep: lines[0].count(sep) for sep in FILE_SEPARATORS}
    consistent = [
        sep
        for sep in FILE_SEPARATORS
        if counts[sep] and all(line.count(sep) == counts[sep] for line in lines)
    ]
    candidates = consistent or [sep for sep in FILE_SEPARATORS if counts[sep]]
    return max(candidates, key=lambda sep: counts[sep], default=",")


def _read_text(path: Path, separator: str, has_header: bool, rows: int) -> pl.DataFrame:
    try:
        frame = pl.read_csv(
            path, separator=separator, has_header=has_header, infer_schema=False, n_rows=rows
        )
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot read {path} with separator {separator!r}: {first}; "
            "pass --separator or --format"
        ) from None
    if not has_header:
        frame.columns = [f"c{i}" for i in range(frame.width)]
    return frame


def _read_parquet(path: Path, rows: int) -> tuple[pl.DataFrame, list[str]]:
    """The flat columns as text, and the names of nested (list/struct) columns left out."""
    try:
        frame = pl.read_parquet(path, n_rows=rows)
    except (pl.exceptions.PolarsError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {path} as parquet: {first}") from None
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    return frame.drop(nested).select(pl.all().cast(pl.Utf8)), nested


def _looks_like_header(probe: pl.DataFrame) -> bool:
    """The first row names the columns if its values are all identifiers (not numbers) and
    a column below is mostly numeric, or none of the names reappears in its column."""
    first = [str(v).strip() if v is not None else "" for v in probe.row(0)]
    if not all(_IDENTIFIER.match(v) and not _is_number(v) for v in first):
        return False
    below = probe.slice(1)
    reappears = False
    for name, value in zip(probe.columns, first, strict=True):
        column = clean_text(below[name]).drop_nulls()
        if column.len() and _share(column.cast(pl.Float64, strict=False).is_not_null()) >= 0.9:
            return True
        reappears = reappears or bool((column == value).any())
    return not reappears


def _sample_notes(path: Path, frame: pl.DataFrame, sample_rows: int) -> tuple[str, ...]:
    note = f"from {path.name}: {frame.height:,} rows x {frame.width} columns sampled"
    if frame.height >= sample_rows:
        note += " (the first rows only; later rows may hold other values)"
    return (note,)


def _criteo_note(layout: _Layout, frame: pl.DataFrame, label: str) -> tuple[str, ...]:
    if layout.has_header or frame.width != 40 or label != frame.columns[0]:
        return ()
    return (
        "40 columns without header, 0/1 first: this looks like Criteo (label, I1-I13, C1-C26); "
        "consider `recipe: criteo` for its standard columns and features",
    )


def _data_section(
    path: Path, layout: _Layout, columns: list[str], label: str, features: list[dict[str, Any]]
) -> dict[str, Any]:
    data: dict[str, Any] = {"format": layout.fmt, "train": str(Path(path).resolve())}
    if layout.fmt != "parquet":
        data["has_header"] = layout.has_header
        if not layout.has_header:
            data["columns"] = list(columns)
        default = "\t" if layout.fmt == "tsv" else ","
        if layout.separator != default:
            data["separator"] = layout.separator
    data["label"] = label
    data["features"] = features
    return data


# ----------------------------------------------------------------------------- label
def _choose_label(path: Path, frame: pl.DataFrame, label: str | None) -> tuple[str, str]:
    """The label column and a note on how it was chosen (and whether it is 0/1)."""
    columns = frame.columns
    if label is not None:
        if label not in columns:
            raise SchemaError(
                f"label column {label!r} not found in {path}; its columns are {_shown(columns)}"
            )
        return label, "given" + _label_warning(frame[label])
    by_name = {c.lower(): c for c in columns}
    for name in LABEL_NAMES:
        if name in by_name:
            chosen = by_name[name]
            return chosen, "label by its name" + _label_warning(frame[chosen])
    if _is_binary(frame[columns[0]]):
        return columns[0], "label: the first column, which holds 0/1"
    raise SchemaError(
        f"cannot tell the label column of {path}: none is named {'/'.join(LABEL_NAMES)} and "
        f"the first column is not 0/1; its columns are {_shown(columns)}; pass --label COLUMN"
    )


def _label_warning(values: pl.Series) -> str:
    if _is_binary(values):
        return ""
    return (
        "; NOT 0/1 (or has empty rows): reading will fail until it is binarized "
        "(e.g. rating >= 4 -> 1, else 0)"
    )


def _is_binary(raw: pl.Series) -> bool:
    values = clean_text(raw)
    parsed = values.cast(pl.Float64, strict=False)
    if values.null_count() or parsed.null_count() or parsed.len() == 0:
        return False
    return bool(parsed.is_in([0.0, 1.0]).all() or parsed.is_in([-1.0, 1.0]).all())


# ----------------------------------------------------------------------------- columns
def _infer_column(
    name: str, raw: pl.Series, file_separator: str | None, num_rows: int
) -> _Decision:
    """Drop, or propose a numeric, sequence or categorical feature for one column."""
    values = clean_text(raw).drop_nulls()
    distinct = values.n_unique()
    if distinct == 0:
        return _Decision(None, "empty in every sampled row: dropped")
    if distinct == 1 and values.len() == num_rows:
        return _Decision(None, "constant: dropped")
    parsed = values.cast(pl.Float64, strict=False)
    numeric_share = _share(parsed.is_not_null())
    if numeric_share >= NUMERIC_FRACTION:
        finite = parsed.drop_nulls().filter(parsed.drop_nulls().is_finite())
        reason = _categorical_number_reason(name, values, finite)
        if reason is None:
            return _numeric(name, values, finite, numeric_share)
        return _categorical(name, values, num_rows, reason)
    return _sequence(name, values, file_separator) or _categorical(
        name, values, num_rows, "text values"
    )


def _categorical_number_reason(name: str, text: pl.Series, numbers: pl.Series) -> str | None:
    """Why a column of numbers should be categorical, or None when it is a measurement."""
    distinct = numbers.n_unique()
    if distinct <= MAX_CATEGORICAL_DISTINCT:
        return f"numbers with only {distinct} distinct values"
    if not bool((numbers == numbers.floor()).all()):
        return None
    if bool(text.str.contains(_LEADING_ZERO.pattern).any()):
        return "integers with leading zeros: codes"
    if _ID_NAME.search(name):
        return "integers named like an id"
    low, high, median = _spread(numbers)
    if high >= LARGEST_EXACT_INTEGER:
        return "integers too large for float64: ids"
    if low >= 0 and median > 0 and high <= EVEN_SPREAD_RATIO * median:
        return f"integers spread evenly over {low:.0f}..{high:.0f} (no heavy tail): like ids"
    smallest = numbers.unique().sort().head(MAX_CATEGORICAL_DISTINCT + 1)
    span = float(smallest[-1] - smallest[0]) + 1
    if span > CODE_GAP_RATIO * smallest.len():
        shown = ", ".join(f"{v:.0f}" for v in smallest.head(4))
        return (
            f"integers with gaps even among the smallest values ({shown}, ...): codes, such "
            "as ad-slot ids, not quantities"
        )
    return None


def _numeric(name: str, text: pl.Series, numbers: pl.Series, share: float) -> _Decision:
    low, high, median = _spread(numbers)
    heavy_tail = high > SKEW_RATIO * median if median > 0 else high > 0
    transform = "log" if low >= 0 and heavy_tail else "standard"
    note = f"numbers in {low:g}..{high:g}, median {median:g}"
    note += ": heavy tail, log" if transform == "log" else ""
    if share < 1.0:
        bad = text.filter(text.cast(pl.Float64, strict=False).is_null())
        note += (
            f"; {bad.len():,} values are not numbers (e.g. {bad[0]!r}) and will fail reading: "
            "fix them or make it categorical"
        )
    return _Decision({"name": name, "type": "numeric", "transform": transform}, note)


def _sequence(name: str, values: pl.Series, file_separator: str | None) -> _Decision | None:
    """A sequence feature when one separator splits many values into tokens that repeat."""
    best, best_share = None, 0.0
    for sep in SEQUENCE_SEPARATORS:
        if sep == file_separator:
            continue
        share = _share(values.str.contains(sep, literal=True))
        if share >= SEQUENCE_FRACTION and share > best_share:
            best, best_share = sep, share
    if best is None:
        return None
    tokens = values.str.split(best)
    per_row = tokens.list.unique().explode().drop_nulls()
    repeated = per_row.filter(per_row.is_duplicated())  # tokens seen in two rows or more
    split_tokens = tokens.filter(tokens.list.len() > 1).explode()
    if not bool(split_tokens.is_in(repeated.implode()).any()):
        return None
    lengths = tokens.list.len().to_numpy()
    max_len = max(1, math.ceil(float(np.quantile(lengths, 0.95, method="higher"))))
    note = f"{best_share:.0%} of values hold {best!r}; 95% have <= {max_len} items"
    feature = {"name": name, "type": "sequence", "separator": best, "max_len": max_len}
    return _Decision(feature, note)


def _categorical(name: str, values: pl.Series, num_rows: int, reason: str) -> _Decision:
    counts = values.rename("value").value_counts()["count"]
    distinct = counts.len()
    if num_rows >= MIN_ROWS_FOR_UNIQUE and distinct == num_rows:
        return _Decision(None, "a different value in every row (a row id?): dropped")
    singletons = int((counts == 1).sum())
    min_count = 2 if singletons > 0.5 * distinct else 1
    note = reason
    if min_count == 2:
        note += f"; {singletons / distinct:.0%} of values seen once: min_count 2"
    if distinct > HASH_SUGGEST_DISTINCT:
        note += f"; over {HASH_SUGGEST_DISTINCT:,} values: consider hash_buckets: {HASH_BUCKETS}"
    feature = {"name": name, "type": "categorical", "min_count": min_count}
    return _Decision(feature, note)


# ----------------------------------------------------------------------------- helpers
def _share(flags: pl.Series) -> float:
    """Fraction of True in a boolean series (0 when empty)."""
    return float(flags.sum()) / flags.len() if flags.len() else 0.0


def _spread(numbers: pl.Series) -> tuple[float, float, float]:
    """Minimum, maximum and median of a non-empty numeric series."""
    array = numbers.to_numpy()
    return float(array.min()), float(array.max()), float(np.median(array))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _shown(columns: list[str]) -> list[str]:
    return columns if len(columns) <= 50 else [*columns[:50], "..."]
