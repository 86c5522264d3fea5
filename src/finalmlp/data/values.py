"""Checks of the values read: numbers that are not numbers or not finite, bad or missing labels.

Each check is a boolean mask over the rows and a message for its first bad row, so the reader
can stop at the first problem (``on_bad_rows: error``) or drop every flagged row at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from finalmlp.columns import float_values
from finalmlp.data.badrows import Policy, bad_rows, row_json
from finalmlp.data.textlines import RowPlaces
from finalmlp.errors import DataError
from finalmlp.schema import DataConfig, NumericFeature, Task

LABEL_VALUES = (0.0, 1.0)
HEADER_HINT = (
    "; line 1 looks like a header read as data: set data.has_header to auto or true for this "
    "file (per split, e.g. {train: true}), or remove the line"
)


@dataclass(frozen=True)
class ValueCheck:
    """Rows failing one check of one column.

    Attributes:
        reason: the reason code (see ``finalmlp.data.badrows.REASONS``).
        column: the column checked.
        bad: Boolean mask, True on the failing rows.
        message: (row, where) -> the error message for that row, ``where`` being e.g.
            "line 12 of train.csv".
    """

    reason: str
    column: str
    bad: pl.Series
    message: Callable[[int, str], str]


def parse_values(
    frame: pl.DataFrame, config: DataConfig, *, label: bool, finite: bool
) -> tuple[pl.DataFrame, list[ValueCheck]]:
    """Numeric columns (and the label, with ``label``) as Float64, and the checks that failed.

    Args:
        frame: the columns read, numbers possibly still as text.
        config: which columns are numeric, the label and its ``label_map``.
        label: parse and check the label column.
        finite: NaN and +-inf in numeric columns are bad (training); else they stay, and the
            FeatureProcessor treats them as missing (scoring, as the server does).
    """
    checks: list[ValueCheck] = []
    parsed: list[pl.Series] = []
    if label:
        for task in config.tasks:
            values, label_checks = _label_values(frame[task.column], task)
            parsed.append(values.alias(task.frame_column))
            checks += label_checks
    numeric = [f.column for f in config.features if isinstance(f, NumericFeature)]
    for column in dict.fromkeys(numeric):
        values, numeric_checks = _numeric_values(frame[column], finite)
        parsed.append(values)
        checks += numeric_checks
    return frame.with_columns(parsed), [c for c in checks if c.bad.any()]


def apply_checks(
    raw: pl.DataFrame,
    parsed: pl.DataFrame,
    checks: list[ValueCheck],
    places: RowPlaces,
    policy: Policy,
    hint: str = "",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Raise on the first bad row (``error``), or drop the rows failing a check.

    Args:
        raw: the columns as read (for the side file's raw text of Parquet rows).
        parsed: the same rows, parsed by :func:`parse_values`.
        checks: its failing checks.
        places: where each row is in the file.
        policy: ``data.on_bad_rows``.
        hint: follows the location in the error message.

    Returns:
        The good rows of ``parsed`` and the bad rows (``BAD_ROWS_SCHEMA``, each with its first
        failing check; ``raw`` text only with ``quarantine``).
    """
    if policy == "error":
        row, _, check = min((int(c.bad.arg_max() or 0), i, c) for i, c in enumerate(checks))
        raise DataError(check.message(row, places.where(row) + hint))
    masks = pl.DataFrame({str(i): c.bad for i, c in enumerate(checks)})
    first = [pl.when(pl.col(str(i))) for i in range(len(checks))]
    flagged = (  # each row's first failing check
        masks.select(
            reason=pl.coalesce(
                [w.then(pl.lit(c.reason)) for w, c in zip(first, checks, strict=True)]
            ),
            column=pl.coalesce(
                [w.then(pl.lit(c.column)) for w, c in zip(first, checks, strict=True)]
            ),
        )
        .with_row_index("row")
        .filter(pl.col("reason").is_not_null())
    )
    rows = flagged["row"].to_numpy().astype(np.int64)
    text: list[str] | None = None
    if policy == "quarantine" and places.text is not None:
        text = places.texts(rows)
    elif policy == "quarantine":  # Parquet: the row as JSON
        text = [row_json(r) for r in raw[rows].iter_rows(named=True)]
    found = bad_rows(places.file_lines(rows).tolist(), flagged["reason"], flagged["column"], text)
    keep = np.ones(parsed.height, dtype=bool)
    keep[rows] = False
    return parsed.filter(pl.Series(keep)), found


def _numeric_values(raw: pl.Series, finite: bool) -> tuple[pl.Series, list[ValueCheck]]:
    values, not_number = float_values(raw, "numeric")
    name = raw.name
    checks = [
        ValueCheck(
            "not_a_number",
            name,
            not_number,
            lambda row, where: (
                f"column {name!r} must be numeric, got {raw[row]!r} on {where}; fix the value, "
                "or declare the feature as categorical"
            ),
        )
    ]
    if finite:
        checks.append(
            ValueCheck(
                "not_finite",
                name,
                (values.is_not_null() & ~values.is_finite()).fill_null(False),
                lambda row, where: (
                    f"column {name!r} must hold finite numbers, got {raw[row]!r} on {where}; "
                    "leave the cell empty for a missing value (the feature's fill_value "
                    "replaces it)"
                ),
            )
        )
    return values, checks


def _label_values(raw: pl.Series, task: Task) -> tuple[pl.Series, list[ValueCheck]]:
    """A task's label as Float64 0/1; empty and bad values are null. Bad values are flagged,
    and empty ones too unless the task allows missing labels (``data.labels``)."""
    name = raw.name
    label_map = task.label_map
    what = f"label column {name!r}" + ("" if task.name == name else f" (task {task.name!r})")
    map_name = f"the label_map of task {task.name!r}" if task.allow_missing else "data.label_map"
    if label_map is None:
        numbers, not_number = float_values(
            raw.cast(pl.Float64) if raw.dtype == pl.Boolean else raw, "a 0/1 label"
        )
        values = numbers.replace(-1.0, 0.0)  # libFM convention: -1/1
        empty = numbers.is_null() & ~not_number
        bad = not_number | ~(values.is_in(list(LABEL_VALUES)).fill_null(True))

        def bad_message(row: int, where: str) -> str:
            got = f"{what} must hold 0/1 (or -1/1), got {raw[row]!r} on {where}"
            if _header_read_as_data(raw[row], where):
                return got + HEADER_HINT
            return got + "; binarize the label first, or map its values with data.label_map"
    else:
        tokens = label_tokens(raw)
        values = tokens.replace_strict(
            list(label_map), [float(v) for v in label_map.values()], default=None,
            return_dtype=pl.Float64,
        )  # fmt: skip
        empty = tokens.is_null()
        bad = ~empty & values.is_null()
        known = sorted(label_map)

        def bad_message(row: int, where: str) -> str:
            got = (
                f"{what} holds a value that {map_name} does not map (it "
                f"maps {known}): {raw[row]!r} on {where}"
            )
            if _header_read_as_data(raw[row], where):
                return got + HEADER_HINT
            return got + f"; add the value to {map_name}"

    checks = [ValueCheck("bad_label", name, bad.fill_null(False), bad_message)]
    if not task.allow_missing:
        checks.insert(
            0,
            ValueCheck(
                "empty_label",
                name,
                empty.fill_null(False),
                lambda row, where: (
                    f"{what} is empty on {where}; every training row needs a 0/1 label"
                ),
            ),
        )
    return values.alias(name), checks


def _header_read_as_data(value: object, where: str) -> bool:
    """A label that is no number on line 1: most likely a header line read as a row."""
    if not where.startswith("line 1 of ") or not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return True
    return False


def label_tokens(raw: pl.Series) -> pl.Series:
    """Label values as text for ``data.label_map``: stripped; whole numbers without ``.0``;
    booleans ``true``/``false``; empty text is null."""
    if raw.dtype == pl.Utf8:
        return raw.str.strip_chars().replace("", None)
    if raw.dtype.is_float():
        value = pl.col(raw.name)
        whole = value.is_finite() & (value == value.floor())
        as_int = value.cast(pl.Int64, strict=False).cast(pl.Utf8)
        text = pl.when(whole).then(as_int).otherwise(value.cast(pl.Utf8))
        return raw.to_frame().select(text.alias(raw.name)).to_series()
    return raw.cast(pl.Utf8)
