"""What happens to bad rows of a training file: ``data.on_bad_rows`` and its report.

``error`` (default) stops at the first bad row, naming the file, the line and the column.
``skip`` drops every bad row and warns once per file with the count of each reason.
``quarantine`` drops them too and writes each one to a side file, ``<data file>.bad_rows.csv``
beside the data file (or in ``data.quarantine_dir``), with columns::

    line,reason,column,raw
    3,field_count,,"0,b,2,extra"
    7,not_a_number,price,"1,c,abc"

``line`` is the line of a CSV/TSV/libsvm file where the row starts (the row number in a Parquet
file), ``reason`` one of :data:`REASONS`, ``column`` the column at fault when there is one and
``raw`` the row as it is in the file (undecodable bytes written ``\\xff``; a Parquet row as
JSON). The side file is written atomically on every read, header only when nothing was bad, so
it always describes the latest read.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from finalmlp.errors import ConfigError
from finalmlp.io import atomic_write
from finalmlp.schema import DataConfig

Policy = Literal["error", "skip", "quarantine"]

REASONS: dict[str, str] = {
    "field_count": "wrong number of fields",
    "blank_line": "blank line",
    "repeated_header": "repeated header line",
    "not_utf8": "not UTF-8",
    "not_a_number": "unparsable number",
    "not_finite": "NaN or infinite number",
    "empty_label": "empty label",
    "bad_label": "label not 0/1 (nor in data.label_map)",
    "bad_token": "malformed libsvm token",
    "unknown_field": "index or field not in data.libsvm",
    "repeated_field": "several indices of a single-valued field",
}
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # warnings point outside it
BAD_ROWS_SCHEMA = pl.Schema(
    {"line": pl.Int64, "reason": pl.String, "column": pl.String, "raw": pl.String}
)
QUARANTINE_SUFFIX = ".bad_rows.csv"
# Ends (or follows the location in) an error message about a bad row of training data.
BAD_ROWS_HINT = " (to drop such rows instead, set data.on_bad_rows: skip or quarantine)"


class BadRowsWarning(UserWarning):
    """Some rows of a data file were bad and left out (``data.on_bad_rows``: skip/quarantine)."""


def no_bad_rows() -> pl.DataFrame:
    return BAD_ROWS_SCHEMA.to_frame()


def bad_rows(
    lines: list[int] | pl.Series,
    reason: str | pl.Series,
    column: str | list[str | None] | pl.Series | None = None,
    raw: list[str] | list[str | None] | pl.Series | None = None,
) -> pl.DataFrame:
    """A table of bad rows in :data:`BAD_ROWS_SCHEMA` (one reason/column for all, or one each)."""
    line_series = pl.Series("line", lines, dtype=pl.Int64)
    count = len(line_series)

    def column_of(name: str, value: object) -> pl.Series:
        if isinstance(value, pl.Series):
            return value.alias(name).cast(pl.String)
        return pl.Series(name, [value] * count if not isinstance(value, list) else value, pl.String)

    return pl.DataFrame(
        [
            line_series,
            column_of("reason", reason),
            column_of("column", column),
            column_of("raw", raw),
        ]
    )


@dataclass(frozen=True)
class BadRowReport:
    """The bad rows found in one data file and what was done with them.

    Attributes:
        path: the data file.
        policy: ``data.on_bad_rows`` as applied (scoring always applies ``error``).
        counts: number of rows left out per reason (see :data:`REASONS`), in file order of
            the first occurrence.
        quarantine: the side file written, with ``quarantine``.
    """

    path: Path
    policy: Policy
    counts: Mapping[str, int] = field(default_factory=dict)
    quarantine: Path | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line for the training log, e.g. ``skipped 3 bad rows in train.csv: ...``."""
        reasons = ", ".join(f"{REASONS.get(r, r)} {n:,}" for r, n in self.counts.items())
        noun = "row" if self.total == 1 else "rows"
        if self.quarantine is not None:
            return (
                f"quarantined {self.total:,} bad {noun} of {self.path} to {self.quarantine}: "
                f"{reasons}"
            )
        return f"skipped {self.total:,} bad {noun} in {self.path}: {reasons}"


def quarantine_path(path: Path, config: DataConfig) -> Path:
    """``<data file name>.bad_rows.csv`` in ``data.quarantine_dir`` or beside the data file."""
    folder = Path(config.quarantine_dir) if config.quarantine_dir is not None else path.parent
    target = folder / (path.name + QUARANTINE_SUFFIX)
    data_files = {Path(p).resolve() for p in (config.train, config.valid, config.test) if p}
    if target.resolve() in data_files | {path.resolve()}:
        raise ConfigError(
            f"the quarantine file {target} would overwrite a data file; "
            "set data.quarantine_dir to another folder"
        )
    return target


def settle(
    path: Path, config: DataConfig, policy: Policy, bad: pl.DataFrame, *, warn: bool = True
) -> BadRowReport:
    """Count the bad rows, write the side file (``quarantine``) and, with ``warn``, warn when
    some were left out (see :func:`warn_bad_rows`)."""
    bad = bad.sort("line", maintain_order=True)
    counts = bad.group_by("reason", maintain_order=True).len()
    report = BadRowReport(
        path,
        policy,
        dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True)),
        quarantine_path(path, config) if policy == "quarantine" else None,
    )
    if report.quarantine is not None:
        atomic_write(report.quarantine, lambda tmp: bad.write_csv(tmp))
    if warn:
        warn_bad_rows(report)
    return report


def warn_bad_rows(report: BadRowReport) -> None:
    """A :class:`BadRowsWarning` with the report's summary when rows were left out, located at
    the first caller outside this package (the user's call, not a reader thread)."""
    if report.total:
        warn_at_caller(report.summary(), BadRowsWarning)


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` at the innermost frame outside the finalmlp package (what
    ``skip_file_prefixes`` does on Python 3.12+), so the location is the user's own call."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def row_json(row: Mapping[str, object]) -> str:
    """A Parquet row as text for the side file."""
    return json.dumps(dict(row), default=str, ensure_ascii=False)
