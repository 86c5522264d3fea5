"""Propose a data config from a libsvm/libFM or libFFM file (``finalmlp schema infer``).

The fields of a libFFM file are in its tokens. Those of a libsvm file come from a field map
(JSON or ``featindex.txt``) when one is given, else from the positions of the tokens: when every
sampled line holds the same number of indices and the k-th index of each line always falls
below the (k+1)-th's smallest, as in Frappe's libFM files (``user item daytime ...``), the k-th
position is a field, ``[smallest k-th index, smallest (k+1)-th index)``. Then each field is:

- sequence: some line holds several of its indices (a categorical feature would refuse them);
- numeric: a single index whose values vary (``7:0.25``, ``7:3.5``);
- categorical: the rest (``min_count: 2`` when most indices occur once); constant fields are
  dropped.

Example:
    >>> result = infer_sparse_schema(Path("train.libfm"), fmt="libsvm")
    >>> print(result.to_yaml())
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from finalmlp.data.libsvm import read_libsvm
from finalmlp.data.textlines import line_blocks
from finalmlp.errors import DataError, SchemaError
from finalmlp.features.proposal import InferredSchema, column_stats
from finalmlp.schema import FieldRange, LibsvmOptions, NumericFeature

SPARSE_FORMATS = ("libsvm", "libffm")
SPARSE_SUFFIXES = {".libsvm": "libsvm", ".svm": "libsvm", ".libfm": "libsvm", ".ffm": "libffm"}
SPARSE_SUFFIXES[".libffm"] = "libffm"
_MULTI = "^"  # read_libsvm joins the indices of a field no feature reads with it
_INDEX_TOKEN = r"^[0-9]+:[^:]+$"
_FFM_TOKEN = r"^[0-9]+:[0-9]+:[^:]+$"


@dataclass(frozen=True)
class _Sample:
    """The first lines of the file, copied to a plain text file, and their count."""

    path: Path
    lines: int
    complete: bool  # the whole file fits in the sample


def sparse_format(path: Path, fmt: str | None) -> str | None:
    """``libsvm``/``libffm`` when ``fmt`` says so, or (``fmt`` None) the suffix or the first
    line's tokens do (``1 3:1 7:1`` or ``1 0:3:1 1:7:1``); None for any other file."""
    if fmt is not None:
        return fmt if fmt in SPARSE_FORMATS else None
    by_suffix = SPARSE_SUFFIXES.get(Path(path).suffix.lower())
    if by_suffix is not None or not Path(path).is_file():
        return by_suffix
    head = next(line_blocks(path), b"")[:65_536].split(b"\n", 1)[0]
    tokens = head.decode("utf-8", errors="replace").split()
    if len(tokens) < 2 or not _is_number(tokens[0]):
        return None
    rest = pl.Series(tokens[1:])
    if rest.str.contains(_FFM_TOKEN).all():
        return "libffm"
    return "libsvm" if rest.str.contains(_INDEX_TOKEN).all() else None


def infer_sparse_schema(
    path: Path,
    *,
    fmt: str,
    field_map: Path | None = None,
    label: str | None = None,
    sample_rows: int = 200_000,
) -> InferredSchema:
    """Read the head of a libsvm/libFFM file and propose a data config.

    Args:
        path: the file (plain, gzip or zstd).
        fmt: ``libsvm`` (libFM too) or ``libffm``.
        field_map: for libsvm, a JSON ``{"idx": "field"}`` or featindex.txt file naming the
            field of each index; without it the fields are found by position (see above).
        label: the name of the label column (the first token of each line); ``label``.
        sample_rows: how many lines to read.

    Raises:
        DataError: a missing, empty or malformed file or field map.
        SchemaError: the fields of a libsvm file cannot be told without a field map, or no
            field is usable as a feature.
    """
    path, label = Path(path), label or "label"
    with tempfile.TemporaryDirectory(prefix="finalmlp-infer-") as scratch:
        sample = _head(path, sample_rows, Path(scratch) / "sample.txt")
        options, notes = _field_options(sample, fmt, field_map, path)
        frame = read_libsvm(sample.path, options, label=label, features=[], ffm=fmt == "libffm")
        values = _single_values(sample.path, options, frame, label, fmt)
    stats = column_stats(frame)
    stats[label]["note"] = "label: the first token of each line (libFM's -1 read as 0)"
    features: list[dict[str, Any]] = []
    for name in frame.columns[1:]:
        feature, note = _infer_field(name, frame[name], values.get(name), frame.height)
        stats[name]["note"] = note
        if feature is not None:
            features.append(feature)
    if not features:
        raise SchemaError(f"no field of {path} is usable as a feature (all constant or empty)")
    data: dict[str, Any] = {"format": fmt, "train": str(path.resolve()), "label": label}
    if options.fields or options.field_map is not None:
        data["libsvm"] = options.model_dump(mode="json", exclude_defaults=True)
    data["features"] = features
    counted = f"from {path.name}: {frame.height:,} lines x {frame.width - 1} fields sampled"
    if not sample.complete:
        counted += " (the first lines only; later lines may hold other indices)"
    rows = frame.height if sample.complete else None
    return InferredSchema(data=data, stats=stats, notes=(counted, *notes), train_rows=rows)


# ----------------------------------------------------------------------------- reading
def _head(path: Path, rows: int, target: Path) -> _Sample:
    """Copy the first ``rows`` lines of ``path`` (decompressed) to ``target``."""
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found; check the path")
    count, complete = 0, True
    with open(target, "wb") as out:
        for block in line_blocks(path):
            lines = block.split(b"\n")
            if block.endswith(b"\n"):
                lines.pop()
            if count + len(lines) > rows:
                lines, complete = lines[: rows - count], False
            out.write(b"".join(line + b"\n" for line in lines))
            count += len(lines)
            if not complete:
                break
    return _Sample(target, count, complete)


def _field_options(
    sample: _Sample, fmt: str, field_map: Path | None, path: Path
) -> tuple[LibsvmOptions, tuple[str, ...]]:
    """The ``data.libsvm`` options and a note on where the fields come from."""
    if fmt == "libffm":
        return LibsvmOptions(), ("libFFM: fields f0, f1, ... are the field numbers of the tokens",)
    if field_map is not None:
        return LibsvmOptions(field_map=Path(field_map).resolve()), ()
    return _positional_fields(sample.path, path)


def _positional_fields(sample: Path, path: Path) -> tuple[LibsvmOptions, tuple[str, ...]]:
    """Index ranges from token positions, when every line has the same fields in order."""
    fix = (
        'pass --field-map (a JSON file {"idx": "field"} or a featindex.txt of '
        "`field:value<TAB>index` lines), or write data.libsvm.fields (index ranges) by hand"
    )
    tokens = (
        pl.read_lines(sample)
        .filter(pl.col("line").str.strip_chars() != "")
        .select(pl.col("line").str.extract_all(r"\S+").list.slice(1).alias("tokens"))
    )
    if tokens.height == 0:
        raise DataError(f"{path} has no data lines")
    lengths = tokens["tokens"].list.len().to_numpy()
    if lengths.min() != lengths.max():
        raise SchemaError(
            f"cannot tell the fields of {path}: its lines hold {lengths.min()} to "
            f"{lengths.max()} indices, so the k-th index is not always the k-th field; {fix}"
        )
    width = int(lengths[0])
    index = tokens.select(
        pl.col("tokens").list.to_struct(fields=[f"p{k}" for k in range(width)])
    ).unnest("tokens")
    index = index.select(pl.all().str.extract(r"^([0-9]+):").cast(pl.Int64))
    low = [int(index[c].to_numpy().min()) for c in index.columns]
    high = [int(index[c].to_numpy().max()) for c in index.columns]
    if any(high[k] >= low[k + 1] for k in range(width - 1)):
        raise SchemaError(
            f"cannot tell the fields of {path}: the indices at one position of a line overlap "
            f"those at the next, so positions are not fields; {fix}"
        )
    starts = [0, *low[1:]]
    ends = [*low[1:], high[-1] + 1]
    fields = [
        FieldRange(name=f"f{k}", start=start, end=end)
        for k, (start, end) in enumerate(zip(starts, ends, strict=True))
    ]
    note = (
        f"fields guessed from positions: every line holds {width} indices, the k-th always "
        f"below the (k+1)-th; the last range ends at the highest index seen ({high[-1]}): "
        "extend it if other files hold higher ones, and rename the fields"
    )
    return LibsvmOptions(fields=fields), (note,)


def _single_values(
    sample: Path, options: LibsvmOptions, frame: pl.DataFrame, label: str, fmt: str
) -> dict[str, pl.Series]:
    """The values of the fields that hold a single index (candidates for numeric)."""
    single = [
        name for name in frame.columns if name != label and frame[name].drop_nulls().n_unique() == 1
    ]
    if not single:
        return {}
    features = [NumericFeature(name=name) for name in single]
    numbers = read_libsvm(sample, options, label=label, features=features, ffm=fmt == "libffm")
    return {name: numbers[name] for name in single}


# ----------------------------------------------------------------------------- fields
def _infer_field(
    name: str, indices: pl.Series, values: pl.Series | None, num_rows: int
) -> tuple[dict[str, Any] | None, str]:
    """A feature for one field (or None: dropped) and why."""
    present = indices.drop_nulls()
    if present.len() == 0:
        return None, "empty in every sampled line: dropped"
    several = present.str.contains(_MULTI, literal=True)
    if several.any():
        lengths = present.str.count_matches(_MULTI, literal=True).to_numpy() + 1
        max_len = max(1, math.ceil(float(np.quantile(lengths, 0.95, method="higher"))))
        share = float(several.sum()) / several.len()
        note = f"{share:.0%} of lines hold several of its indices; 95% hold <= {max_len}"
        return {"name": name, "type": "sequence", "max_len": max_len}, note
    if values is not None:
        distinct = values.drop_nulls().n_unique()
        if distinct > 1:
            numbers = values.drop_nulls().to_numpy()
            note = f"one index with values in {numbers.min():g}..{numbers.max():g}"
            return {"name": name, "type": "numeric", "transform": "standard"}, note
        if present.len() == num_rows:
            return None, "constant: dropped"
    counts = present.value_counts()["count"]
    singletons = int((counts == 1).sum())
    min_count = 2 if singletons > 0.5 * counts.len() else 1
    note = f"{counts.len():,} distinct ind{'ex' if counts.len() == 1 else 'ices'}"
    if min_count == 2:
        note += f"; {singletons / counts.len():.0%} seen once: min_count 2"
    return {"name": name, "type": "categorical", "min_count": min_count}, note


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
