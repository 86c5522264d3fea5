"""A data file to score, streamed in chunks and checked as the readers check a whole file.

Before the first chunk: the file exists, the feature and id columns are present and, for
CSV/TSV (plain, gzip or zstd), one streamed pass over the lines finds a line with another
number of fields, a blank line, a repeated header line or bytes that are not UTF-8
(:mod:`finalmlp.data.csvlines`). Then Polars streams only the columns needed, ``chunk_rows`` at
a time, text as text (ids keep their leading zeros). Each chunk's numbers are parsed as the
readers parse a scored file (:func:`finalmlp.data.values.parse_values`: NaN and inf are missing
values); a bad one is reported with its line in the file, whichever chunk it is in. Scoring
stops at the first bad row, whatever ``data.on_bad_rows`` says: every input row gets a score.

libsvm/libFFM files have no streaming reader: they are read whole, then scored in chunks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from finalmlp.data.csvlines import raise_structure, scan_structure
from finalmlp.data.headers import csv_separator
from finalmlp.data.readers import (
    _check_is_file,
    _check_present,
    _csv_column,
    _first_line,
    _valid_utf8,
    csv_header,
    read_file,
)
from finalmlp.data.textlines import NotUtf8Error, first_line
from finalmlp.data.values import parse_values
from finalmlp.errors import DataError, SchemaError
from finalmlp.schema import DataConfig


class ChunkReader:
    """The chunks of one input file: the feature columns and ``id_columns``, in file order.

    Args:
        path: the file.
        config: the run's data config for it (format, separator, header, features).
        id_columns: columns to pass through; checked to be in the file.
        chunk_rows: rows per chunk (the last one may have fewer).

    Example:
        >>> reader = ChunkReader(Path("rows.csv"), config, ["request_id"], 100_000)
        >>> for chunk in reader.open():
        ...     features = processor.transform(reader.parse(chunk))
    """

    def __init__(
        self, path: Path, config: DataConfig, id_columns: list[str], chunk_rows: int
    ) -> None:
        self.path, self.config, self.chunk_rows = path, config, chunk_rows
        self.id_columns = id_columns
        features = [f.column for f in config.features]
        self.columns = list(dict.fromkeys([*features, *id_columns]))
        self.offset = 0  # data rows before the current chunk, for messages
        self.record_lines: np.ndarray | None = None  # first line of each record, if not 1:1
        self.has_header = False  # the CSV/TSV file starts with a header line (detected)

    def open(self) -> Iterator[pl.DataFrame]:
        """Check the file and its columns now; the chunks come when iterated.

        Raises:
            DataError: a missing or unreadable file, a bad line (named).
            SchemaError: a feature or id column missing from the file.
        """
        _check_is_file(self.path)
        fmt = self.config.format
        if fmt in ("csv", "tsv"):
            frames = self._csv()
        elif fmt == "parquet":
            self._check_columns(list(pl.read_parquet_schema(self.path)))
            scan = pl.scan_parquet(self.path).select(self.columns)
            frames = scan.collect_batches(chunk_size=self.chunk_rows)
        else:
            whole = read_file(self.path, self.config, require_label=False)
            self._check_columns(whole.columns)
            step = self.chunk_rows
            frames = (whole.slice(start, step) for start in range(0, whole.height, step))
        return self._counted(frames)

    def _counted(self, frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        try:
            for frame in frames:
                yield frame
                self.offset += frame.height
        except pl.exceptions.PolarsError as exc:
            raise DataError(
                f"cannot read {self.path} as {self.config.format}: {_first_line(exc)}"
            ) from None

    def _csv(self) -> Iterator[pl.DataFrame]:
        separator = csv_separator(self.config)
        features = list(dict.fromkeys(f.column for f in self.config.features))
        layout = csv_header(self.path, self.config, features)
        header, self.has_header = layout.names, layout.present
        self._check_columns(header)
        header_line = separator.join(header)  # a line equal to it is a repeated header
        if self.has_header:
            text = first_line(self.path).decode("utf-8", errors="replace")
            header_line = text.removeprefix("\ufeff")
        try:  # Polars would fill a short line with nulls: lines are checked first
            structure = scan_structure(
                self.path, separator, len(header), self.has_header, header_line, True
            )
        except NotUtf8Error:  # raises naming the line, byte and column
            _valid_utf8(self.path, "error", "", self.path.parent, _csv_column(header, separator),
                        self.has_header)  # fmt: skip
            raise
        if structure.bad.height:
            raise_structure(self.path, structure.bad.row(0, named=True), len(header))
        if structure.records is not None:  # quoted fields span lines
            self.record_lines = structure.records[:, 0]
        scan = pl.scan_csv(
            self.path,
            separator=separator,
            has_header=self.has_header,
            infer_schema=False,
            truncate_ragged_lines=False,
        ).select([pl.nth(header.index(c)).alias(c) for c in self.columns])
        return scan.collect_batches(chunk_size=self.chunk_rows)

    def _check_columns(self, available: list[str]) -> None:
        missing = [c for c in self.id_columns if c not in available]
        if missing:
            shown = available if len(available) <= 50 else [*available[:50], "..."]
            raise SchemaError(
                f"id column(s) {missing} not found in {self.path}; its columns are {shown}. "
                "Fix --id-columns"
            )
        features = list(dict.fromkeys(f.column for f in self.config.features))
        _check_present(self.path, available, features, self.config)

    def parse(self, chunk: pl.DataFrame) -> pl.DataFrame:
        """Numeric columns as Float64 (NaN/inf kept: missing values to the processor).

        Raises:
            DataError: a value that is not a number, naming its line (or row) in the file.
        """
        parsed, checks = parse_values(chunk, self.config, label=False, finite=False)
        if checks:
            row, _, check = min((int(c.bad.arg_max() or 0), i, c) for i, c in enumerate(checks))
            raise DataError(check.message(row, self.where(row)))
        return parsed

    def where(self, row: int) -> str:
        """Where row ``row`` of the current chunk is in the file."""
        index = self.offset + row
        if self.config.format not in ("csv", "tsv"):
            return f"row {index + 1:,} of {self.path}"
        if self.record_lines is not None:
            return f"line {int(self.record_lines[index]):,} of {self.path}"
        return f"line {index + (2 if self.has_header else 1):,} of {self.path}"
