"""Row-wise encoding of small requests: the fitted processor's state, applied in plain Python.

The FeatureProcessor encodes whole columns with Polars: fast per row on big frames, but each
call costs tens of Polars operations whatever the row count (about 18 ms for one Frappe record
on a 2-core machine), far over a 10 ms latency budget. :class:`RowEncoder` applies the same
fitted state (vocabularies, hash buckets, statistics, bucket edges) with dict lookups and NumPy
on the few rows of a request, and reproduces the processor's token rules (see
:func:`finalmlp.features.processor.normalize_tokens`): text stripped of Unicode white space,
``True``/``FALSE`` spelled ``true``/``false``, empty text missing, missing values to the fill
value (categorical) or the ``"null"`` bucket (``log_square``), sequences split, emptied items
dropped, truncated.

It is an optimisation, never a second truth: :meth:`RowEncoder.verified` encodes probe rows
(vocabulary values, unseen and odd values, missing values) both ways and returns None, so the
service falls back to the processor, if a single id or value differs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from finalmlp.features.processor import MISSING_BUCKET, EncodedFeatures, FeatureProcessor
from finalmlp.features.tables import FIRST_ID, OOV_ID, IdTable, stable_hash
from finalmlp.features.tokens import BOOLEAN_TEXT
from finalmlp.schema import CategoricalFeature, NumericFeature, SequenceFeature
from finalmlp.serve.scorer import Prepared, Scorer, UnknownFields

logger = logging.getLogger(__name__)
# Polars' strip_chars() trims Rust's char::is_whitespace (Unicode White_Space); Python's
# str.strip() also trims \x1c-\x1f, so the set is spelled out.
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + ("\u2028\u2029\u202f\u205f\u3000")
)
INT64_LIMIT = 2.0**63
ROWWISE_MAX_ROWS = 1024  # from about here on, the processor's column-wise encoding is as fast


def _token(value: str | None) -> str | None:
    """normalize_tokens for one text value: None when missing."""
    if value is None:
        return None
    text = value.strip(WHITESPACE)
    text = BOOLEAN_TEXT.get(text, text)
    return text or None


def _lookup(table: IdTable) -> Callable[[str], int]:
    if table.hash_buckets is not None:
        buckets = table.hash_buckets
        return lambda token: stable_hash(token, buckets)
    ids = {value: FIRST_ID + i for i, value in enumerate(table.values)}
    return lambda token: ids.get(token, OOV_ID)


class RowEncoder:
    """Encodes a few cleaned rows (column name -> values) as the processor would.

    Args:
        processor: a fitted FeatureProcessor (its state is read, never changed).
    """

    def __init__(self, processor: FeatureProcessor) -> None:
        self.processor = processor
        self._tables = {  # quantile-bucket tables have no values: their ids come from edges
            name: _lookup(table)
            for name, table in processor.tables_.items()
            if table.num_buckets is None
        }

    @classmethod
    def verified(cls, processor: FeatureProcessor, probe: pl.DataFrame) -> RowEncoder | None:
        """An encoder that matches ``processor.transform`` on ``probe``, else None."""
        encoder = cls(processor)
        columns = {name: probe[name].to_list() for name in processor.columns}
        with np.errstate(over="ignore"):  # the probe's huge numbers overflow float32: inf
            try:
                mine = encoder.encode(columns, probe.height)
            except (KeyError, ValueError, TypeError) as exc:
                logger.warning("row-wise encoding unavailable (%s); using the processor", exc)
                return None
            theirs = processor.transform(probe)
        same = np.array_equal(mine.categorical, theirs.categorical) and np.array_equal(
            mine.numeric, theirs.numeric, equal_nan=True
        )
        same = same and all(
            np.array_equal(a, b) for a, b in zip(mine.sequences, theirs.sequences, strict=True)
        )
        if not same:
            logger.warning("row-wise encoding differs from the processor; using the processor")
            return None
        return encoder

    def encode(self, columns: Mapping[str, Sequence[Any]], num_rows: int) -> EncodedFeatures:
        """Columns of str/None (categorical, sequence) or float/None (numeric) values."""
        proc = self.processor
        categorical = np.empty((num_rows, len(proc.categorical_features)), dtype=np.int32)
        for j, feat in enumerate(proc.categorical_features):
            categorical[:, j] = self._categorical(feat, columns[feat.column])
        numeric = np.empty((num_rows, len(proc.numeric_features)), dtype=np.float32)
        for j, num in enumerate(proc.numeric_features):
            numeric[:, j] = self._scale(num, self._filled(num, columns[num.column]))
        sequences = tuple(
            self._sequence(s, columns[s.column], num_rows) for s in proc.sequence_features
        )
        return EncodedFeatures(categorical, numeric, sequences)

    def _table(self, feat: CategoricalFeature | NumericFeature | SequenceFeature) -> Any:
        owner = getattr(feat, "share_embedding", None) or feat.name
        return self._tables[owner]

    def _categorical(
        self, feat: CategoricalFeature | NumericFeature, values: Sequence[Any]
    ) -> np.ndarray:
        if isinstance(feat, NumericFeature) and feat.bucketize == "quantile":
            edges = np.asarray(self.processor.bucket_edges_[feat.name])
            found = np.searchsorted(edges, self._filled(feat, values), side="right")
            return (FIRST_ID + found).astype(np.int32)
        lookup = self._table(feat)
        if isinstance(feat, NumericFeature):  # log_square buckets
            return np.array([lookup(t) for t in _log_square_tokens(values)], dtype=np.int32)
        fill = feat.fill_value
        return np.array(
            [lookup(t if (t := _token(v)) is not None else fill) for v in values], dtype=np.int32
        )

    @staticmethod
    def _filled(feat: NumericFeature, values: Sequence[Any]) -> np.ndarray:
        fill = feat.fill_value
        return np.array(
            [fill if v is None or not math.isfinite(v) else v for v in values], dtype=np.float64
        )

    def _scale(self, feat: NumericFeature, x: np.ndarray) -> np.ndarray:
        """The processor's own scaling (standard, minmax, log; float32 clipping)."""
        return self.processor._scale(feat, _Column(x))  # type: ignore[arg-type]

    def _sequence(self, feat: SequenceFeature, values: Sequence[Any], num_rows: int) -> np.ndarray:
        lookup = self._table(feat)
        out = np.zeros((num_rows, feat.max_len), dtype=np.int32)
        for row, value in enumerate(values):
            items = value if isinstance(value, list) else (value or "").split(feat.separator)
            tokens = [t for item in items if (t := _token(item))]
            kept = tokens[: feat.max_len] if feat.truncate == "head" else tokens[-feat.max_len :]
            out[row, : len(kept)] = [lookup(t) for t in kept]
        return out


class _Column:
    """What FeatureProcessor._scale reads of a Polars column: ``to_numpy()``."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def to_numpy(self) -> np.ndarray:
        return self.values


def _log_square_tokens(values: Sequence[Any]) -> list[str]:
    """Criteo's floor(log(x)^2) for x > 2, else floor(x), as text; missing: ``"null"``."""
    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        safe = np.where(arr > 2, arr, math.e)
        bucket = np.where(arr > 2, np.floor(np.log(safe) ** 2), np.floor(arr))
    return [
        str(int(b)) if math.isfinite(b) and -INT64_LIMIT <= b < INT64_LIMIT else MISSING_BUCKET
        for b in bucket.tolist()
    ]


class RowScorer(Scorer):
    """A Scorer that encodes requests of up to ``max_rows`` rows with a verified RowEncoder.

    Validation, messages and results are the Scorer's; only the encoding of small requests is
    faster. Larger requests, and bundles whose probe check fails, use the processor.
    """

    def __init__(
        self,
        run: Any,
        unknown_fields: UnknownFields = "reject",
        max_rows: int = ROWWISE_MAX_ROWS,
    ) -> None:
        super().__init__(run, unknown_fields)
        self.max_rows = max_rows
        self.encoder = RowEncoder.verified(run.processor, probe_frame(self))

    def score_prepared(self, prepared: Prepared) -> np.ndarray:
        if self.encoder is None or prepared.num_rows > self.max_rows:
            return super().score_prepared(prepared)
        return self.score_features(self.encoder.encode(prepared.columns, prepared.num_rows))


PROBE_TEXT = [
    "",
    " ",
    "True",
    "FALSE",
    "true",
    " x ",
    "\x1c7\x1f",
    "\u3000a\u00a0",
    "1.5",
    "0",
    "-1",
    "null",
    "never-seen-value",
    "é",
]
PROBE_NUMBERS = [0.0, 1.0, -1.0, 2.0, 2.5, 3.0, 1e6, -1e6, 0.1, 1e30, -1e300]


def probe_frame(scorer: Scorer) -> pl.DataFrame:
    """Rows exercising each field's token rules, vocabulary values and missing values, in the
    form Scorer.score_records builds (Utf8 text, Float64 numbers, nulls)."""
    run = scorer.run
    vocab: list[str] = [v for t in run.processor.tables_.values() for v in t.values[:20]]
    text: list[str | None] = [*PROBE_TEXT, *vocab, None]
    numbers: list[float | None] = [*PROBE_NUMBERS, *(float(i) for i in range(-3, 40)), None]
    for stats in run.processor.numeric_stats_.values():
        numbers += [stats["mean"], stats["min"], stats["max"]]
    for edges in run.processor.bucket_edges_.values():
        numbers += list(edges)
    height = max(len(text), len(numbers))
    data: dict[str, pl.Series] = {}
    for index, field in enumerate(scorer.fields):
        if field.kind == "numeric":
            data[field.name] = pl.Series(field.name, _cycle(numbers, height, index), pl.Float64)
        else:
            values = _cycle(text, height, index)
            if field.kind == "sequence":  # a few multi-item sequences
                sep = field.separator
                values = [
                    v if i % 3 or v is None else sep.join([v, " ", v, "True"] * 3)
                    for i, v in enumerate(values)
                ]
            data[field.name] = pl.Series(field.name, values, pl.Utf8)
    return pl.DataFrame(data)


def _cycle(values: list[Any], height: int, shift: int) -> list[Any]:
    return [values[(i + shift) % len(values)] for i in range(height)]
