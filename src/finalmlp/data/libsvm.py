"""Read libsvm/libFM (``label idx:val ...``) and libFFM (``label field:idx:val ...``) files.

The sparse lines become one row per line with a named column per field, the same table shape
as a CSV, so everything downstream treats the two alike::

    -1 204:1 4798:1 5041:1        label  user  item  daytime
     1 42:1 1572:1 5042:1    ->   0.0    "204" "4798" "5041"
                                  1.0    "42"  "1572" "5042"

The field of an index comes from ``LibsvmOptions.fields`` (index ranges) or ``field_map`` (a JSON
file ``{"idx": "field"}``, or a ``featindex.txt`` of ``field:value<TAB>index`` lines); libFFM lines
carry it. Unnamed libFFM fields are ``f0, f1, ...``: the columns run up to the highest field
number in the file or asked for by a feature, so a field that a feature uses is a (null) column
even in a file where it never occurs. A field declared numeric in ``features`` holds the float
value, any other field the index as a string; fields absent from a line are null.

Several indices of one field on a line are never silently merged into one value. A field read
by a ``SequenceFeature`` takes them all, joined by its ``separator`` (a sequence). A field read
by a categorical or numeric feature holds one: ``LibsvmOptions.multi_valued`` says what a line
with several gets (``error``: a bad row, naming the file, line and field; ``first``/``last``:
that index only). A field no feature reads keeps them all, joined with ``"^"``, so that
``schema infer`` can see which fields are multi-valued.

Parsing is columnar: Polars splits, explodes and regex-parses all tokens at once, NumPy
``searchsorted`` maps indices to fields, and a group-by + pivot rebuilds the rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from finalmlp.data.badrows import Policy, bad_rows, no_bad_rows
from finalmlp.data.textlines import NotUtf8Error
from finalmlp.errors import ConfigError, DataError
from finalmlp.schema import Feature, LibsvmOptions, NumericFeature, SequenceFeature

__all__ = ["LibsvmTable", "read_libsvm", "read_libsvm_table"]

_ROW = "__row"  # internal column names, prefixed to stay clear of field names
_LINE = "__line"
_LABEL = "__label"
_TEXT = "__text"
_TOKEN_PATTERN = r"^(?P<idx>[0-9]+):(?P<val>[^:]+)$"
_FFM_TOKEN_PATTERN = r"^(?P<field>[0-9]+):(?P<idx>[0-9]+):(?P<val>[^:]+)$"
_MULTI_SEPARATOR = "^"
_FFM_NAME = re.compile(r"f(0|[1-9][0-9]*)")  # default libFFM field names: f0, f1, ...
MultiValued = Literal["error", "first", "last"]


def read_libsvm(
    path: Path,
    options: LibsvmOptions,
    *,
    label: str,
    features: Sequence[Feature],
    ffm: bool = False,
) -> pl.DataFrame:
    """Read a libsvm/libFM or libFFM file into a table with one column per field.

    Args:
        path: the text file (gzip/zstd compressed or not), one example per line; blank lines
            are skipped.
        options: how indices map to fields (``fields`` ranges or a ``field_map`` file;
            for libFFM optional ``field_names``) and ``multi_valued``.
        label: name of the label column in the result.
        features: declared features; a field whose name is the ``column`` of a
            ``NumericFeature`` keeps the float value, every other field the index; a
            ``SequenceFeature``'s separator joins several indices of its field, a field of
            another feature holds one (see ``options.multi_valued``).
        ffm: lines are libFFM ``label field:idx:val``.

    Returns:
        ``label`` (Float64, 0/1; libFM's -1 becomes 0) then one column per field in field
        order (by smallest index; libFFM: by field number): Float64 for numeric fields,
        String otherwise (several indices joined by the sequence separator, or ``"^"`` for a
        field no feature reads).

    Raises:
        DataError: naming the file, the 1-based line and the offending token (or field with
            several indices); also for a missing file or field map and when neither
            ``fields`` nor ``field_map`` is given.
        ConfigError: overlapping or empty ranges, both ``fields`` and ``field_map``,
            duplicate ``field_names``, or a field named like the label.

    Example:
        >>> options = LibsvmOptions(fields=[FieldRange(name="user", start=0, end=957)])
        >>> read_libsvm(Path("f.libfm"), options, label="label", features=[])  # doctest: +SKIP
    """
    return read_libsvm_table(path, options, label=label, features=features, ffm=ffm).frame


@dataclass(frozen=True)
class LibsvmTable:
    """The table of :func:`read_libsvm`, the line of each row, and the lines left out.

    Attributes:
        frame: as :func:`read_libsvm` returns it.
        lines: (N,) int64, the 1-based line of each row.
        bad: the lines left out (``policy`` skip/quarantine), in the schema of
            ``finalmlp.data.badrows.BAD_ROWS_SCHEMA``.
    """

    frame: pl.DataFrame
    lines: np.ndarray
    bad: pl.DataFrame


def read_libsvm_table(
    path: Path,
    options: LibsvmOptions,
    *,
    label: str,
    features: Sequence[Feature],
    ffm: bool = False,
    label_map: Mapping[str, int] | None = None,
    policy: Policy = "error",
    hint: str = "",
) -> LibsvmTable:
    """:func:`read_libsvm`, with a ``label_map`` (first token -> 0/1) and a bad-line policy:
    ``error`` raises on the first bad line, ``skip``/``quarantine`` leave bad lines out."""
    path = Path(path)
    index_table = None if ffm else _index_table(options, path)  # option errors before parsing
    bad = _BadLines(policy, hint)
    lines = _read_lines(path)
    labels = _parse_labels(lines, path, label_map, bad)
    entries = bad.drop(_parse_tokens(lines, path, ffm, bad))
    if index_table is None:
        field_names, codes = _ffm_fields(entries, options, path, features, bad)
    else:
        field_names, codes = _lookup_fields(entries, index_table, path, bad)
    if label in field_names:
        raise ConfigError(
            f"label column {label!r} clashes with a field of the same name in {path}; "
            "rename the label (data.label) or the field"
        )
    entries = bad.drop(entries.with_columns(pl.Series("field", codes, dtype=pl.Int32)))
    kinds = _FieldKinds.from_features(features)
    entries = _single_values(entries, field_names, kinds, options.multi_valued, path, bad)
    labels, entries = bad.drop(labels), bad.drop(entries)
    frame = _assemble(labels, entries, field_names, kinds).rename({_LABEL: label})
    return LibsvmTable(frame, labels[_LINE].to_numpy().astype(np.int64), bad.table(lines))


@dataclass(frozen=True)
class _FieldKinds:
    """What the declared features say about fields: which are numeric, which hold one value,
    which separators."""

    numeric: frozenset[str]
    single: frozenset[str]  # read by a categorical or numeric feature: one index per line
    separators: dict[str, str]  # separator of each sequence column; others join with "^"

    @classmethod
    def from_features(cls, features: Sequence[Feature]) -> _FieldKinds:
        separators = {f.column: f.separator for f in features if isinstance(f, SequenceFeature)}
        return cls(
            numeric=frozenset(f.column for f in features if isinstance(f, NumericFeature)),
            single=frozenset(f.column for f in features if f.column not in separators),
            separators=separators,
        )


class _BadLines:
    """Bad lines found so far: raise on the first (``error``) or collect them to leave out."""

    def __init__(self, policy: Policy, hint: str) -> None:
        self.policy, self.hint = policy, hint
        self.found: list[pl.DataFrame] = []

    def report(
        self, bad: pl.DataFrame, reason: str, message: Callable[[dict[str, Any]], str]
    ) -> None:
        """``bad``: offending tokens or lines (with ``__line``), in file order."""
        if bad.height == 0:
            return
        if self.policy == "error":
            raise DataError(message(bad.row(0, named=True)) + self.hint)
        self.found.append(bad.select(_LINE, pl.lit(reason).alias("reason")))

    def drop(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` without the rows of bad lines."""
        if not self.found:
            return frame
        return frame.filter(~pl.col(_LINE).is_in(pl.concat(self.found)[_LINE].implode()))

    def table(self, lines: pl.DataFrame) -> pl.DataFrame:
        """The bad lines, one row each (its first reason) with the line's text."""
        if not self.found:
            return no_bad_rows()
        found = pl.concat(self.found).unique(_LINE, keep="first", maintain_order=True)
        found = found.join(lines.select(_LINE, _TEXT), on=_LINE, how="left")
        return bad_rows(found[_LINE], found["reason"], None, found[_TEXT])


# ----------------------------------------------------------------------------- lines, tokens
def _read_lines(path: Path) -> pl.DataFrame:
    """Non-blank lines: 1-based line number, text and whitespace-separated tokens."""
    if not path.is_file():
        raise DataError(f"libsvm file {str(path)!r} not found; check data.train/valid/test")
    try:
        raw = pl.read_lines(path, row_index_name=_LINE, row_index_offset=1, glob=False)
    except pl.exceptions.ComputeError as exc:
        raise NotUtf8Error(f"cannot read {path} as UTF-8 text: {exc}") from None
    # Splitting on " " is 3x faster than a regex; use it when every space is a single separator.
    irregular = raw["line"].str.contains(r"[^\S ]|  |^ | $").any()
    split = pl.col("line").str.extract_all(r"\S+") if irregular else pl.col("line").str.split(" ")
    lines = (
        raw.filter(pl.col("line") != "")
        .select(_LINE, pl.col("line").alias(_TEXT), split.alias("tokens"))
        .filter(pl.col("tokens").list.len() > 0)
    )
    if lines.height == 0:
        raise DataError(
            f"libsvm file {path} is empty; expected one example per line, "
            "`label idx:val idx:val ...`"
        )
    return lines.with_row_index(_ROW)


def _parse_labels(
    lines: pl.DataFrame, path: Path, label_map: Mapping[str, int] | None, bad: _BadLines
) -> pl.DataFrame:
    """The first token of each line as a 0/1 Float64 ``label``; -1 (libFM negatives) -> 0."""
    token = pl.col("tokens").list.first()
    if label_map is None:
        value = token.cast(pl.Float64, strict=False)
        parsed = lines.select(_ROW, _LINE, token.alias("token"), value.alias(_LABEL))
        wrong = parsed.filter(~pl.col(_LABEL).is_in([-1.0, 0.0, 1.0]).fill_null(False))

        def message(row: dict[str, Any]) -> str:
            problem = "is not a number" if row[_LABEL] is None else "is not a binary label"
            if row[_LABEL] is None and row[_LINE] == 1:
                problem += " (line 1 looks like a header: libsvm files have none; remove it)"
            return (
                f"label {row['token']!r} on line {row[_LINE]} of {path} {problem}; expected 1, "
                "0 or -1 as the first token of each line (`label idx:val ...`), or map the "
                "labels with data.label_map; fix or drop the line"
            )
    else:
        value = token.replace_strict(
            list(label_map), [float(v) for v in label_map.values()], default=None,
            return_dtype=pl.Float64,
        )  # fmt: skip
        parsed = lines.select(_ROW, _LINE, token.alias("token"), value.alias(_LABEL))
        wrong = parsed.filter(pl.col(_LABEL).is_null())
        known = sorted(label_map)

        def message(row: dict[str, Any]) -> str:
            return (
                f"label {row['token']!r} on line {row[_LINE]} of {path} is not in "
                f"data.label_map (it maps {known}); add it there, or fix or drop the line"
            )

    bad.report(wrong, "bad_label", message)
    return parsed.select(_ROW, _LINE, pl.col(_LABEL).clip(lower_bound=0.0))


def _parse_tokens(lines: pl.DataFrame, path: Path, ffm: bool, bad: _BadLines) -> pl.DataFrame:
    """One row per ``idx:val`` token: row, line, token, idx (Int64), value, [ffm_field]."""
    pattern = _FFM_TOKEN_PATTERN if ffm else _TOKEN_PATTERN
    tokens = (
        lines.select(_ROW, _LINE, pl.col("tokens").list.slice(1).alias("token"))
        .explode("token")
        .drop_nulls("token")
        .with_columns(pl.col("token").str.extract_groups(pattern).alias("parts"))
        .unnest("parts")
    )
    expected = "field:idx:val" if ffm else "idx:val"
    hint = (
        "libFFM lines are `label field:idx:val ...`"
        if ffm
        else "for libFFM files (`field:idx:val`) set data.format: libffm"
    )
    bad.report(
        tokens.filter(pl.col("idx").is_null()),
        "bad_token",
        lambda row: (
            f"token {row['token']!r} on line {row[_LINE]} of {path} is not `{expected}`; "
            "expected non-negative integer indices and a numeric value such as `42:1`; "
            f"{hint}"
        ),
    )
    return _cast_numbers(tokens.filter(pl.col("idx").is_not_null()), path, ffm, bad)


def _cast_numbers(tokens: pl.DataFrame, path: Path, ffm: bool, bad: _BadLines) -> pl.DataFrame:
    """Cast the regex groups to numbers; report a non-numeric value or a huge index."""
    int_columns = ["field", "idx"] if ffm else ["idx"]
    parsed = tokens.with_columns(
        pl.col(int_columns).cast(pl.Int64, strict=False),
        pl.col("val").cast(pl.Float64, strict=False).alias("value"),
    )
    unparsed = pl.any_horizontal(pl.col([*int_columns, "value"]).is_null())
    bad.report(
        parsed.filter(unparsed),
        "not_a_number",
        lambda row: (
            f"token {row['token']!r} on line {row[_LINE]} of {path} does not hold numbers; "
            f"expected an integer index below 2^63 and a numeric value (got {row['val']!r}), "
            "as in `42:1` or `42:0.5`; fix the token"
        ),
    )
    return parsed.filter(~unparsed).drop("val")


# ----------------------------------------------------------------------------- fields
@dataclass(frozen=True)
class _IndexTable:
    """Sorted, disjoint index intervals ``starts[i] <= idx < ends[i]`` of field ``names[i]``."""

    starts: np.ndarray
    ends: np.ndarray
    names: list[str]
    fix: str  # completes "index 7 on line 3 of f.libfm ..." when an index is not covered


def _index_table(options: LibsvmOptions, path: Path) -> _IndexTable:
    """The index -> field table of ``fields`` or ``field_map``; raise if neither or both."""
    if options.fields and options.field_map is not None:
        raise ConfigError("data.libsvm: give either fields (index ranges) or field_map, not both")
    if options.fields:
        starts, ends, names = _range_table(options)
        return _IndexTable(starts, ends, names, "is in no field range; extend data.libsvm.fields")
    if options.field_map is not None:
        starts, names = _map_table(options.field_map)
        fix = f"is not in the field map {options.field_map}; add it there"
        return _IndexTable(starts, starts + 1, names, fix)
    raise DataError(
        f"cannot tell the field of each index in {path}: set data.libsvm.fields (index "
        'ranges) or data.libsvm.field_map (a JSON file {"idx": "field"}, or a featindex.txt '
        "of `field:value<TAB>index` lines); "
        "only libFFM files carry their fields"
    )


def _lookup_fields(
    entries: pl.DataFrame, table: _IndexTable, path: Path, bad: _BadLines
) -> tuple[list[str], np.ndarray]:
    """Field names (ordered by their smallest index) and, per token, its field's code (that
    of the first field for an index in no field: its line is reported to ``bad``)."""
    idx = entries["idx"].to_numpy()
    slot = np.searchsorted(table.starts, idx, side="right") - 1
    covered = (slot >= 0) & (idx < table.ends[np.maximum(slot, 0)])
    bad.report(
        entries.filter(pl.Series(~covered)),
        "unknown_field",
        lambda row: f"index {row['idx']} on line {row[_LINE]} of {path} {table.fix}",
    )
    field_names = list(dict.fromkeys(table.names))
    code_of_name = {name: code for code, name in enumerate(field_names)}
    slot_codes = np.array([code_of_name[name] for name in table.names], dtype=np.int32)
    return field_names, slot_codes[np.maximum(slot, 0)]


def _range_table(options: LibsvmOptions) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Starts, ends and names of the index ranges, sorted by start; checks they are disjoint."""
    ranges = sorted(options.fields, key=lambda r: r.start)
    for prev, cur in zip([None, *ranges], ranges, strict=False):
        if cur.start >= cur.end:
            raise ConfigError(
                f"data.libsvm.fields: range {cur.name!r} [{cur.start}, {cur.end}) is empty; "
                "end must be greater than start (end is exclusive)"
            )
        if prev is not None and cur.start < prev.end:
            raise ConfigError(
                f"data.libsvm.fields: ranges {prev.name!r} [{prev.start}, {prev.end}) and "
                f"{cur.name!r} [{cur.start}, {cur.end}) overlap; make them disjoint"
            )
    starts = np.array([r.start for r in ranges], dtype=np.int64)
    ends = np.array([r.end for r in ranges], dtype=np.int64)
    return starts, ends, [r.name for r in ranges]


def _map_table(field_map: Path) -> tuple[np.ndarray, list[str]]:
    """Indices of a field map, sorted, and the field name of each: a JSON object
    ``{"idx": "field"}``, or a ``featindex.txt`` (``field:value<TAB>index`` per line)."""
    usage = (
        'expected a JSON object mapping each index to its field, e.g. {"0": "user"}, or '
        "featindex.txt lines `field:value<TAB>index`, e.g. `user:u42<TAB>0`"
    )
    if not Path(field_map).is_file():
        raise DataError(f"field map {str(field_map)!r} (data.libsvm.field_map) not found; {usage}")
    try:
        text = Path(field_map).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"field map {field_map} is not UTF-8 text ({exc}); {usage}") from None
    if text.lstrip()[:1] in ("{", "["):
        indices, names = _json_map(field_map, text, usage)
    else:
        indices, names = _featindex_map(field_map, text, usage)
    order = np.argsort(indices, kind="stable")
    return indices[order], [names[i] for i in order]


def _json_map(field_map: Path, text: str, usage: str) -> tuple[np.ndarray, list[str]]:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"field map {field_map} is not valid JSON ({exc}); {usage}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"field map {field_map} holds {type(mapping).__name__}; {usage}")
    for key, name in mapping.items():
        if not (key.isascii() and key.isdigit()) or not isinstance(name, str):
            raise DataError(
                f"field map {field_map} has entry {key!r}: {name!r}; keys must be "
                f"non-negative integers and values field names; {usage}"
            )
    return np.array([int(key) for key in mapping], dtype=np.int64), list(mapping.values())


def _featindex_map(field_map: Path, text: str, usage: str) -> tuple[np.ndarray, list[str]]:
    """A featindex.txt: the field of ``field:value`` is the text before its first colon (a key
    without one, such as ``truncate``, is a field of its own); the index is the last column."""
    lines = pl.DataFrame({"text": text.splitlines()}).with_row_index("line", offset=1)
    lines = lines.filter(pl.col("text").str.strip_chars() != "")
    parts = lines.with_columns(
        pl.col("text").str.extract_groups(r"^\s*(?P<key>\S(?:.*\S)?)\s+(?P<idx>[0-9]{1,18})\s*$")
    ).unnest("text")
    if lines.height == 0:
        raise DataError(f"field map {field_map} holds no entry; {usage}")
    wrong = parts.filter(pl.col("idx").is_null())
    if wrong.height:
        line = int(wrong["line"][0])
        raise DataError(
            f"line {line} of field map {field_map} is {text.splitlines()[line - 1]!r}; {usage}"
        )
    table = parts.select(
        pl.col("key").str.split_exact(":", 1).struct.field("field_0").alias("field"),
        pl.col("idx").cast(pl.Int64),
        "line",
    )
    clash = (
        table.filter(pl.col("idx").is_duplicated())
        .group_by("idx", maintain_order=True)
        .agg(pl.col("field").unique(maintain_order=True), pl.col("line"))
        .filter(pl.col("field").list.len() > 1)
    )
    if clash.height:
        row = clash.row(0, named=True)
        raise DataError(
            f"field map {field_map} gives index {row['idx']} to fields {row['field']} (lines "
            f"{row['line']}); each index must belong to one field"
        )
    return table["idx"].to_numpy(), table["field"].to_list()


def _ffm_fields(
    entries: pl.DataFrame,
    options: LibsvmOptions,
    path: Path,
    features: Sequence[Feature],
    bad: _BadLines,
) -> tuple[list[str], np.ndarray]:
    """Field names (``field_names`` or ``f0, f1, ...``) and each token's field number.

    Without ``field_names`` the names run to the highest field of the file or of the features'
    ``f{i}`` columns, so every file of a dataset has the columns its features need.
    """
    codes = entries["field"].to_numpy().astype(np.int32)
    if not options.field_names:
        asked = [int(m[1]) for f in features if (m := _FFM_NAME.fullmatch(f.column))]
        count = max(int(codes.max(initial=-1)), max(asked, default=-1)) + 1
        return [f"f{i}" for i in range(count)], codes
    num_names = len(options.field_names)
    if len(set(options.field_names)) < num_names:
        raise ConfigError(f"data.libsvm.field_names must be unique, got {options.field_names}")
    bad.report(
        entries.filter(pl.Series(codes >= num_names)),
        "unknown_field",
        lambda row: (
            f"field {row['field']} in token {row['token']!r} on line {row[_LINE]} of {path} "
            f"has no name: data.libsvm.field_names lists {num_names} names (fields "
            f"0..{num_names - 1}); add names for the missing fields"
        ),
    )
    return list(options.field_names), codes


# ----------------------------------------------------------------------------- rows
def _single_values(
    entries: pl.DataFrame,
    field_names: list[str],
    kinds: _FieldKinds,
    multi_valued: MultiValued,
    path: Path,
    bad: _BadLines,
) -> pl.DataFrame:
    """``entries`` with one token per line for each single-valued field: the ``first`` or
    ``last`` of several, or (``error``) the lines holding several reported to ``bad``."""
    single_codes = [code for code, name in enumerate(field_names) if name in kinds.single]
    single = pl.col("field").is_in(single_codes)
    if not _has_repeats(entries.filter(single), len(field_names)):
        return entries
    key = pl.struct(_ROW, "field")
    if multi_valued != "error":
        kept = key.is_first_distinct() if multi_valued == "first" else key.is_last_distinct()
        return entries.filter(~single | kept)
    repeats = entries.filter(single & key.is_duplicated())

    def message(row: dict[str, Any]) -> str:
        name = field_names[row["field"]]
        same = repeats.filter((pl.col(_ROW) == row[_ROW]) & (pl.col("field") == row["field"]))
        where = f"on line {row[_LINE]} of {path} ({', '.join(same['token'].head(5))})"
        if name in kinds.numeric:
            return (
                f"numeric field {name!r} has several indices {where}; expected one `idx:val` "
                "per numeric field; declare the field categorical or sequence instead, or set "
                "data.libsvm.multi_valued: first (or last) to keep one"
            )
        return (
            f"field {name!r} has several indices {where}, but its feature is categorical "
            "(one index per line). Declare the feature `type: sequence` to read them all, "
            "set data.libsvm.multi_valued: first (or last) to keep one, or check that "
            "data.libsvm.fields / field_map give each field its own indices"
        )

    bad.report(repeats, "repeated_field", message)
    return entries


def _assemble(
    labels: pl.DataFrame, entries: pl.DataFrame, field_names: list[str], kinds: _FieldKinds
) -> pl.DataFrame:
    """Pivot the tokens back to one row per line: the label, then one column per field."""
    numeric_codes = [code for code, name in enumerate(field_names) if name in kinds.numeric]
    other_codes = [code for code, name in enumerate(field_names) if name not in kinds.numeric]
    is_numeric = pl.col("field").is_in(numeric_codes)
    strings = entries.filter(~is_numeric).select(
        _ROW, "field", pl.col("idx").cast(pl.String).alias("value")
    )
    if _has_repeats(strings, len(field_names)):
        strings = _join_repeats(strings, field_names, kinds)
    numbers = entries.filter(is_numeric)
    table = labels
    for part, codes in ((strings, other_codes), (numbers, numeric_codes)):
        if codes:
            wide = part.pivot(on="field", index=_ROW, values="value", on_columns=codes)
            table = table.join(wide, on=_ROW, how="left", maintain_order="left")
    return table.select(
        _LABEL,
        *[
            pl.col(str(code)).cast(pl.Float64 if code in numeric_codes else pl.String).alias(name)
            for code, name in enumerate(field_names)
        ],
    )


def _join_repeats(
    strings: pl.DataFrame, field_names: list[str], kinds: _FieldKinds
) -> pl.DataFrame:
    """One value per (line, field): the indices in file order, joined by the field's separator."""
    separator_of_code = {
        code: kinds.separators.get(name, _MULTI_SEPARATOR) for code, name in enumerate(field_names)
    }
    separators = pl.col("field").replace_strict(separator_of_code, return_dtype=pl.String)
    return (
        strings.group_by(_ROW, "field", maintain_order=True)
        .agg("value")  # a list agg + list.join is ~5x faster than str.join inside the agg
        .with_columns(pl.col("value").list.join(separators))
    )


def _has_repeats(entries: pl.DataFrame, num_fields: int) -> bool:
    """Whether some line holds several tokens of one field."""
    keys = entries[_ROW].to_numpy().astype(np.int64) * num_fields + entries["field"].to_numpy()
    keys.sort()
    return bool((keys[1:] == keys[:-1]).any())
