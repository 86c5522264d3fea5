"""Column checks shared by the readers and the feature processor (Polars only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import polars as pl

from finalmlp.errors import DataError, SchemaError


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number with Python's ``float`` (``1e5``, `` 3 ``, ``nan``)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_columns(df: pl.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(
            f"column(s) {missing} not found in {where}; it has {df.columns}. "
            "Fix the feature names (or their `source`) in the config"
        )


def parse_floats(raw: pl.Series, what: str, locate: Callable[[int], str]) -> pl.Series:
    """Float64 from numbers or numeric text; empty text and nulls become null.

    Args:
        raw: the column.
        what: what the column must hold, for the message ("numeric", "a 0/1 label").
        locate: row index -> where that row is ("line 12 of train.csv").

    Raises:
        DataError: text that is not a number, naming the column, the value and where.
    """
    parsed, bad = float_values(raw, what)
    if bad.any():
        row = int(bad.arg_max() or 0)
        raise DataError(
            f"column {raw.name!r} must be {what}, got {raw[row]!r} on {locate(row)}; "
            "fix the value, or declare the feature as categorical"
        )
    return parsed


def float_values(raw: pl.Series, what: str) -> tuple[pl.Series, pl.Series]:
    """Float64 values (null where missing or not a number) and the mask of text that is not
    a number (``NaN``/``inf`` text are numbers here).

    Raises:
        SchemaError: a column that is neither numbers nor text.
    """
    if raw.dtype == pl.Null:  # all missing, e.g. one scored row without this value
        return raw.cast(pl.Float64), _all_false(raw)
    if raw.dtype.is_numeric():
        return raw.cast(pl.Float64), _all_false(raw)
    if raw.dtype != pl.Utf8:
        raise SchemaError(f"column {raw.name!r} must be {what}, got dtype {raw.dtype}")
    text = raw.str.strip_chars().replace("", None)
    parsed = text.cast(pl.Float64, strict=False)
    return parsed, parsed.is_null() & text.is_not_null()


def _all_false(raw: pl.Series) -> pl.Series:
    return pl.repeat(False, raw.len(), dtype=pl.Boolean, eager=True).alias(raw.name)
