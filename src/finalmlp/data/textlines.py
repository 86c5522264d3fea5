"""The lines of a text data file, whatever its compression: bytes, UTF-8 checks, clean copies.

Polars reads gzip and zstd files itself (it detects them by their magic bytes, not their
suffix), so a clean file never passes through here. These helpers run only when something is
wrong: a line that is not UTF-8 (Polars refuses the whole file), or bad lines to leave out of a
copy that Polars then reads. Line numbers are 1-based, lines split on ``\\n`` as Polars splits
them (a ``\\r`` before it stays part of the line).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa

from finalmlp.errors import DataError

_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}
_BLOCK = 1 << 22  # bytes read at a time


class NotUtf8Error(DataError):
    """Polars refused a file because some line is not UTF-8 (the line is found afterwards)."""


def compression_of(path: Path) -> str | None:
    """``"gzip"``, ``"zstd"`` or None, from the file's first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return next((codec for magic, codec in _MAGIC.items() if head.startswith(magic)), None)


@contextlib.contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO | Any]:
    """The file's (decompressed) bytes as a stream with ``read(n)``."""
    codec = compression_of(path)
    if codec is None:
        with open(path, "rb") as handle:
            yield handle
        return
    stream = pa.CompressedInputStream(pa.OSFile(str(path)), codec)
    try:
        yield stream
    finally:
        stream.close()


def line_blocks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes in blocks that end at a line end (the last one may not)."""
    with open_binary(path) as stream:
        rest = b""
        while block := stream.read(_BLOCK):
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            if cut:
                yield block[:cut]
        if rest:
            yield rest


def block_lines(block: bytes) -> list[bytes]:
    """The lines of a block from :func:`line_blocks`, without their ``\\n``."""
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    return lines


def first_line(path: Path) -> bytes:
    """The first line's bytes (without ``\\r\\n``), or empty bytes for an empty file."""
    with open_binary(path) as stream:
        head = b""
        while b"\n" not in head and (block := stream.read(1 << 16)):
            head += block
    return head.split(b"\n", 1)[0].removesuffix(b"\r")


# ----------------------------------------------------------------------------- UTF-8
@dataclass(frozen=True)
class Utf8Problem:
    """A line that is not UTF-8: its number, bytes and the offset of the first bad byte."""

    line: int
    raw: bytes
    offset: int

    @property
    def text(self) -> str:
        """The line with undecodable bytes written as ``\\xff``, for messages and side files."""
        return self.raw.decode("utf-8", errors="backslashreplace")


def copy_valid_utf8(path: Path, target: Path | None) -> list[Utf8Problem]:
    """The lines of ``path`` that are not UTF-8; with ``target``, copy the others there.

    Without ``target`` it stops at the first such line. Blocks that decode whole (nearly all)
    are copied as they are; only a failing block is split into lines.
    """
    problems: list[Utf8Problem] = []
    out = open(target, "wb") if target is not None else None  # noqa: SIM115
    try:
        line = 0
        for block in line_blocks(path):
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                for raw in block_lines(block):
                    line += 1
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        problems.append(Utf8Problem(line, raw, exc.start))
                        if out is None:
                            return problems
                    else:
                        if out is not None:
                            out.write(raw + b"\n")
                continue
            line += block.count(b"\n") + (not block.endswith(b"\n"))
            if out is not None:
                out.write(block)
    finally:
        if out is not None:
            out.close()
    return problems


# ----------------------------------------------------------------------------- copies
@dataclass(frozen=True)
class LineMap:
    """Line numbers of a copy with some lines left out -> line numbers of the file copied."""

    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def original(self, lines: np.ndarray) -> np.ndarray:
        """Map copy line numbers to the copied file's (vectorised)."""
        lines = np.asarray(lines, dtype=np.int64)
        if len(self.removed) == 0:
            return lines
        # After the i-th removed line r_i, copy lines are shifted by i + 1: copy line c is
        # original c + #{i : r_i - i <= c}.
        shifted = self.removed - np.arange(len(self.removed))
        return lines + np.searchsorted(shifted, lines, side="right")


def copy_without_lines(path: Path, target: Path, removed: np.ndarray) -> LineMap:
    """Copy ``path`` (decompressed, UTF-8) to ``target`` without the ``removed`` lines."""
    removed = np.unique(np.asarray(removed, dtype=np.int64))
    (
        pl.scan_lines(path, row_index_name="number", row_index_offset=1)
        .filter(~pl.col("number").is_in(pl.Series(removed)))
        .select("line")
        .sink_csv(target, include_header=False, quote_style="never")
    )
    return LineMap(removed)


def fetch_lines(path: Path, numbers: np.ndarray) -> dict[int, str]:
    """The text of some lines of a UTF-8 file (streamed), by line number."""
    wanted = pl.Series(np.unique(np.asarray(numbers, dtype=np.int64)))
    found = (
        pl.scan_lines(path, row_index_name="number", row_index_offset=1)
        .filter(pl.col("number").is_in(wanted))
        .collect(engine="streaming")
    )
    return dict(zip(found["number"].to_list(), found["line"].to_list(), strict=True))


def record_text(path: Path, starts: np.ndarray, ends: np.ndarray) -> list[str]:
    """The text of records (lines ``starts[i]`` to ``ends[i]``) of a UTF-8 file."""
    spans = list(zip(np.asarray(starts).tolist(), np.asarray(ends).tolist(), strict=True))
    wanted = [np.arange(s, e + 1) for s, e in spans]
    found = fetch_lines(path, np.concatenate(wanted) if wanted else np.zeros(0, np.int64))
    return [
        "\n".join(found.get(n, "").removesuffix("\r") for n in range(s, e + 1)) for s, e in spans
    ]


@dataclass(frozen=True)
class RowPlaces:
    """Where the rows of a frame are in the data file, for messages and the side file.

    Rows of a text file are lines of ``text`` (the data file, or its copy without the lines
    that are not UTF-8; ``utf8`` maps back): line ``first + row`` of a copy without the bad
    lines (``copy`` maps back), or ``lines[row]`` (to ``last_lines[row]``) when known.
    Parquet rows (``text`` None) are numbered from 1.
    """

    path: Path
    noun: str = "line"  # "row" for Parquet
    first: int = 1
    lines: np.ndarray | None = None
    last_lines: np.ndarray | None = None
    copy: LineMap = field(default_factory=LineMap)
    text: Path | None = None
    utf8: LineMap = field(default_factory=LineMap)

    def text_lines(self, rows: np.ndarray) -> np.ndarray:
        if self.lines is not None:
            return self.lines[rows]
        return self.copy.original(np.asarray(rows, dtype=np.int64) + self.first)

    def file_lines(self, rows: np.ndarray) -> np.ndarray:
        """Line (or Parquet row) numbers of rows in the data file."""
        return self.utf8.original(self.text_lines(rows))

    def where(self, row: int) -> str:
        """E.g. ``line 1,204 of train.csv``."""
        return f"{self.noun} {int(self.file_lines(np.array([row]))[0]):,} of {self.path}"

    def texts(self, rows: np.ndarray) -> list[str]:
        """The rows as they are in a text file."""
        if self.text is None:
            raise ValueError("rows of a Parquet file have no text")
        starts = self.text_lines(rows)
        ends = self.last_lines[rows] if self.last_lines is not None else starts
        return record_text(self.text, starts, ends)
