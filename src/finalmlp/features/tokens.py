"""Tokens of categorical values, the same whatever dtype a file stored them in: the rule the
processor (fitting, encoding), the history builder (user keys) and the row-wise scorer share."""

from __future__ import annotations

import polars as pl
from polars.datatypes import DataTypeClass

from finalmlp.errors import SchemaError

Dtype = pl.DataType | DataTypeClass  # a Polars dtype, instance (List(...)) or class (String)
# Spellings of booleans in text files (Polars/Spark write true, pandas True) -> Arrow's text.
BOOLEAN_TEXT = {"True": "true", "TRUE": "true", "False": "false", "FALSE": "false"}


def normalize_tokens(column: pl.Series, feature: str) -> pl.Series:
    """String tokens of a categorical column, the same whatever dtype the file stored.

    Text is stripped; integers become their decimal text; floats that are whole numbers
    become integer text (``1005.0`` -> ``"1005"``), other floats their shortest text
    (``1.5`` -> ``"1.5"``); booleans, and the text ``True``/``TRUE`` (pandas writes those),
    become ``"true"``/``"false"``. Missing values (null, NaN, empty or blank text) come back
    as null for the caller's fill value.

    Raises:
        SchemaError: a nested column (list, struct) where single values are expected.
    """
    if column.dtype == pl.Utf8:  # the Utf8 branch of token_expr, with booleans checked first
        text = column.str.strip_chars()
        if text.is_in(list(BOOLEAN_TEXT)).any():
            text = text.replace(BOOLEAN_TEXT)
        return text.replace("", None)
    expr = token_expr(pl.col(column.name), column.dtype, column.name, feature)
    return column.to_frame().select(expr.alias(column.name)).to_series()


def has_boolean_text(column: pl.Series) -> bool:
    """Whether a text column may hold ``True``/``FALSE``...: a cheap check that spares most
    columns the (5x slower) replacement."""
    if column.dtype != pl.Utf8:
        return column.dtype != pl.Null  # lists, categoricals: do not bother checking
    return bool(column.str.contains_any(list(BOOLEAN_TEXT)).any())


def token_expr(
    expr: pl.Expr, dtype: Dtype, column: str, feature: str, booleans: bool = True
) -> pl.Expr:
    """:func:`normalize_tokens` as an expression (also used on list items).

    ``booleans=False`` skips mapping ``True``/``FALSE``... to ``true``/``false`` for text
    known to hold none of them.
    """
    if dtype == pl.Null:
        return expr.cast(pl.Utf8)
    if dtype == pl.Boolean or dtype.is_integer() or dtype.is_temporal():
        return expr.cast(pl.Utf8)
    if dtype.is_float() or dtype.is_decimal():
        x = expr.cast(pl.Float64)
        whole = x.is_finite() & (x == x.floor()) & (x.abs() < 2.0**63)
        as_int = x.cast(pl.Int64, strict=False).cast(pl.Utf8)
        return pl.when(x.is_nan()).then(None).when(whole).then(as_int).otherwise(x.cast(pl.Utf8))
    if dtype == pl.Utf8 or isinstance(dtype, pl.Categorical | pl.Enum):
        text = expr.cast(pl.Utf8).str.strip_chars()
        text = text.replace(BOOLEAN_TEXT) if booleans else text
        return text.replace("", None)
    raise SchemaError(
        f"column {column!r} of feature {feature!r} has dtype {dtype}; expected single values "
        "(text, integers, floats or booleans). Flatten the column, or declare a list column "
        "as a sequence feature"
    )
