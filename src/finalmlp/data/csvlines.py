"""The structure of a CSV/TSV file, line by line: field counts, blank and repeated header lines.

Polars would silently fill a short line with nulls and skip the extra fields of a long one when
it reads only some columns, so one vectorised, streamed pass over the lines counts the
separators first (about a third of the reading time) and, in the same pass, spots blank lines
and lines equal to the header (files concatenated with their headers). A file with quoted fields
spanning several lines is checked with Python's ``csv`` module instead (slower, exact). A blank
line counts as a line with no fields, except in a one-column file where it is a missing value.

A carriage return inside a line (not just before its newline) is part of its field, as Polars
reads it; Python's csv module would stop there (``csv.Error: new-line character seen in unquoted
field``), so lines holding one go through :func:`_hide_returns` first.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import polars as pl

from finalmlp.data.textlines import NotUtf8Error, block_lines, line_blocks
from finalmlp.errors import DataError

QUOTE = '"'  # Polars' default quote character, used by both CSV readers here
_ESCAPE, _RETURN = "\ue000", "\ue001"  # private-use characters: never a separator or quote
_HIDDEN = re.compile(f"{_ESCAPE}(.)", re.DOTALL)
_STRUCTURE_SCHEMA = pl.Schema(
    {
        "line": pl.Int64,
        "last_line": pl.Int64,
        "reason": pl.String,
        "fields": pl.Int64,
        "raw": pl.String,
    }
)


@dataclass(frozen=True)
class CsvStructure:
    """Bad lines of a CSV file and, when quoted fields span lines, where each record is.

    Attributes:
        bad: one row per bad record: ``line`` and ``last_line`` (equal unless a quoted field
            spans lines), ``reason`` (field_count, blank_line, repeated_header), ``fields``
            and ``raw`` (the line's text; null when found by the csv module).
        records: (R, 2) first and last line of each good data record, only when some quoted
            field spans lines (else each data line is one record).
    """

    bad: pl.DataFrame
    records: np.ndarray | None = None

    @classmethod
    def clean(cls) -> CsvStructure:
        """No bad line, one record per line."""
        return cls(_STRUCTURE_SCHEMA.to_frame())


def scan_structure(
    path: Path,
    separator: str,
    expected: int,
    has_header: bool,
    header_line: str | None = None,
    first_only: bool = False,
) -> CsvStructure:
    """Find the lines whose field count differs from ``expected``, blank lines and, with
    ``header_line``, lines equal to the header. ``first_only`` stops at the first one.

    Raises:
        NotUtf8Error: some line is not UTF-8.
    """
    line = pl.col("line").str.strip_suffix("\r")
    fields = line.str.count_matches(separator, literal=True) + 1
    quoted = line.str.contains(QUOTE, literal=True)
    blank = line == "" if expected > 1 else pl.lit(False)  # one column: a blank is a value
    repeat = line == header_line if header_line is not None else pl.lit(False)
    unquoted = line.str.replace_all(f"{QUOTE}[^{QUOTE}]*{QUOTE}", "")
    query = (
        pl.scan_lines(path, row_index_name="number", row_index_offset=1)
        .filter(pl.col("number") > int(has_header))
        .with_columns(fields=fields, quoted=quoted, blank=blank, repeat=repeat)
        .filter(
            (pl.col("fields") != expected) | pl.col("quoted") | pl.col("blank") | pl.col("repeat")
        )
        .with_columns(  # on the few suspect lines only: drop the quoted parts, count again
            fields=pl.when(pl.col("blank"))
            .then(0)
            .when(pl.col("quoted"))
            .then(unquoted.str.count_matches(separator, literal=True) + 1)
            .otherwise(pl.col("fields")),
            odd_quotes=line.str.count_matches(QUOTE, literal=True) % 2 == 1,
        )
        .filter((pl.col("fields") != expected) | pl.col("odd_quotes") | pl.col("repeat"))
    )
    try:  # memory bounded by a chunk of lines, not the file
        suspects = (query.head(1) if first_only else query).collect(engine="streaming")
    except pl.exceptions.ComputeError as exc:
        if "utf" in str(exc).lower():
            raise NotUtf8Error(f"cannot read {path} as UTF-8") from None
        raise
    if suspects["odd_quotes"].any():
        header = split_fields(header_line, separator) if header_line else None
        return scan_records(path, separator, expected, has_header, header, first_only)
    reason = (
        pl.when(pl.col("repeat"))
        .then(pl.lit("repeated_header"))
        .when(pl.col("blank"))
        .then(pl.lit("blank_line"))
        .otherwise(pl.lit("field_count"))
    )
    bad = suspects.select(
        pl.col("number").cast(pl.Int64).alias("line"),
        pl.col("number").cast(pl.Int64).alias("last_line"),
        reason.alias("reason"),
        pl.col("fields").cast(pl.Int64),
        pl.col("line").str.strip_suffix("\r").alias("raw"),
    )
    return CsvStructure(bad)


def scan_records(
    path: Path,
    separator: str,
    expected: int,
    has_header: bool,
    header: list[str] | None = None,
    first_only: bool = False,
) -> CsvStructure:
    """:func:`scan_structure` with Python's csv module: exact when quoted fields span lines."""
    bad: list[tuple[int, int, str, int]] = []
    records: list[tuple[int, int]] = []
    reader = csv.reader(_text_lines(path), delimiter=separator, quotechar=QUOTE)
    start = 1
    try:
        for fields in reader:
            end = reader.line_num
            record = [_show_returns(f) for f in fields] if _hidden(fields) else fields
            if not (has_header and start == 1):
                reason = _record_problem(record, expected, header)
                if reason is not None:
                    bad.append((start, end, reason, len(record)))
                    if first_only:
                        break
                else:
                    records.append((start, end))
            start = end + 1
    except csv.Error as exc:
        raise DataError(
            f"cannot read line {start:,} of {path} as CSV ({exc}); fix the quoting"
        ) from None
    frame = pl.DataFrame(
        bad, schema=["line", "last_line", "reason", "fields"], orient="row"
    ).with_columns(pl.lit(None, pl.String).alias("raw"))
    return CsvStructure(
        frame.cast(dict(_STRUCTURE_SCHEMA)),  # type: ignore[arg-type]
        np.array(records, dtype=np.int64).reshape(-1, 2),
    )


def _record_problem(record: list[str], expected: int, header: list[str] | None) -> str | None:
    if header is not None and record == header:
        return "repeated_header"
    if not record:
        return "blank_line" if expected > 1 else None
    return "field_count" if len(record) != expected else None


def _text_lines(path: Path) -> Iterator[str]:
    """Lines with their ``\\n`` for the csv module (decompressed; UTF-8 checked before), a
    carriage return inside a line hidden (:func:`_hide_returns`)."""
    for block in line_blocks(path):
        for raw in block_lines(block):
            text = raw.decode("utf-8", errors="replace")
            if _ESCAPE in text or "\r" in text.removesuffix("\r"):
                text = _hide_returns(text.removesuffix("\r")) + "\r" * text.endswith("\r")
            yield text + "\n"


def split_fields(text: str, separator: str) -> list[str]:
    """The fields of one line (no newline) as Polars reads them: quotes removed, a carriage
    return kept in its field; ``[]`` for an empty line."""
    hide = "\r" in text or _ESCAPE in text
    line = _hide_returns(text) if hide else text
    fields = next(csv.reader([line], delimiter=separator, quotechar=QUOTE), [])
    return [_show_returns(field) for field in fields] if hide else fields


def _hidden(fields: list[str]) -> bool:
    """Whether some field holds a carriage return hidden by :func:`_hide_returns`."""
    return any(_ESCAPE in field for field in fields)


def _hide_returns(text: str) -> str:
    """Write each ``\\r`` as two private-use characters the csv module reads as text (and the
    escape character itself doubled, so :func:`_show_returns` restores the text exactly)."""
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("\r", _ESCAPE + _RETURN)


def _show_returns(field: str) -> str:
    """Undo :func:`_hide_returns` on one field."""
    return _HIDDEN.sub(lambda m: "\r" if m.group(1) == _RETURN else _ESCAPE, field)


def raise_structure(path: Path, row: dict[str, object], expected: int, hint: str = "") -> NoReturn:
    """Raise for one bad line of :attr:`CsvStructure.bad`."""
    line = f"line {row['line']:,} of {path}"
    if row["reason"] == "repeated_header":
        raise DataError(
            f"{line} repeats the header (were files joined with their headers?); "
            f"remove the line{hint}"
        )
    what = "is blank" if row["reason"] == "blank_line" else f"has {row['fields']} fields"
    raise DataError(f"{line} {what}, expected {expected}; fix the line or remove it{hint}")


def check_field_counts(path: Path, separator: str, expected: int, has_header: bool) -> None:
    """Raise on the first line whose number of fields differs from ``expected``."""
    structure = scan_structure(path, separator, expected, has_header, first_only=True)
    if structure.bad.height:
        raise_structure(path, structure.bad.row(0, named=True), expected)
