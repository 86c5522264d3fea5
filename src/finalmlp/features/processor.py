"""FeatureProcessor: raw columns -> model-ready int32 ids and float32 values.

Follows the scikit-learn contract: the constructor only stores the schema, ``fit`` (train split
only) learns the state (attributes ending in ``_``), ``transform`` before ``fit`` raises
NotFittedError. The state is JSON (``save``/``load``), never pickle, and the exact same object
is used by training, evaluation, batch scoring and serving.

Tokens do not depend on how a file stored a value (see :func:`normalize_tokens`): the CSV text
``"1005"``, a Parquet Int64 ``1005`` and a Float64 ``1005.0`` are the same category, so a
processor fitted on one format encodes the others alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl
from pydantic import TypeAdapter

from finalmlp.columns import check_columns, parse_floats
from finalmlp.errors import DataError, NotFittedError, SchemaError
from finalmlp.features.history import RowHistories
from finalmlp.features.history_column import HistoryColumn
from finalmlp.features.tables import FIRST_ID, IdTable
from finalmlp.features.tokens import Dtype, has_boolean_text, normalize_tokens, token_expr
from finalmlp.io import atomic_write_text
from finalmlp.layout import FieldLayout, Pooling
from finalmlp.schema import (
    AttentionOptions,
    CategoricalFeature,
    Feature,
    NumericFeature,
    SequenceFeature,
)

# 2: tokens no longer depend on the file's dtype, log_square has a "null" bucket. A version-1
# state would encode such values differently from how its model was trained, so it is refused.
STATE_VERSION = 2
_FEATURES = TypeAdapter(list[Feature])
_T = TypeVar("_T")

# Values per feature that streamed fitting samples for quantile bucket edges.
QUANTILE_SAMPLE = 1_000_000
MISSING_BUCKET = "null"  # log_square token of a missing value: no number collides with it


@dataclass(frozen=True)
class EncodedFeatures:
    """Encoded columns of N rows, in FieldLayout order.

    Attributes:
        categorical: (N, C) int32 ids.
        numeric: (N, D) float32 values.
        sequences: one (N, L) int32 array per sequence field, 0-padded; a history built
            from an event log is a HistoryColumn (indexing it gives the padded rows).
    """

    categorical: np.ndarray
    numeric: np.ndarray
    sequences: tuple[np.ndarray | HistoryColumn, ...]

    @property
    def num_rows(self) -> int:
        return int(self.categorical.shape[0])


class FeatureProcessor:
    """Fits vocabularies, hash tables, numeric statistics and bucket edges on the train split.

    Args:
        features: the feature specs of the data config.

    Example:
        >>> proc = FeatureProcessor(config.data.features).fit(train_df)
        >>> encoded = proc.transform(test_df)
        >>> proc.save("run/processor.json")
    """

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = list(features)
        # Within fit_transform: each feature's tokens, computed once for fit and transform.
        self._token_memo: dict[str, pl.Series] | None = None
        # Within fit/transform of a split with built histories (data.history).
        self._histories: RowHistories | None = None

    # ------------------------------------------------------------------ structure
    @property
    def categorical_features(self) -> list[CategoricalFeature | NumericFeature]:
        return [
            f
            for f in self.features
            if isinstance(f, CategoricalFeature) or (isinstance(f, NumericFeature) and f.bucketize)
        ]

    @property
    def numeric_features(self) -> list[NumericFeature]:
        return [f for f in self.features if isinstance(f, NumericFeature) and not f.bucketize]

    @property
    def sequence_features(self) -> list[SequenceFeature]:
        return [f for f in self.features if isinstance(f, SequenceFeature)]

    @property
    def columns(self) -> list[str]:
        """Raw columns the processor reads (a history feature's own column when scoring)."""
        return list(dict.fromkeys(f.column for f in self.features))

    def _columns_read(self) -> list[str]:
        """Raw columns of the frame at hand: history features come from the built histories
        while fitting or encoding a split that has them."""
        if self._histories is None:
            return self.columns
        return list(dict.fromkeys(f.column for f in self.features if not _is_history(f)))

    def _table_owner(self, feature: Feature) -> str:
        share = getattr(feature, "share_embedding", None)
        return share if share is not None else feature.name

    # ------------------------------------------------------------------ fit
    def fit(self, df: pl.DataFrame, histories: RowHistories | None = None) -> FeatureProcessor:
        """Learn tables and statistics from the train split (and its built histories: a
        history feature with a table of its own counts each train behaviour event once)."""
        self._histories = histories
        try:
            return self.fit_chunks([df], quantile_sample=None)
        finally:
            self._histories = None

    def fit_chunks(
        self, chunks: Iterable[pl.DataFrame], quantile_sample: int | None = QUANTILE_SAMPLE
    ) -> FeatureProcessor:
        """Learn tables and statistics from the train split given as chunks of rows (e.g. one
        file at a time), holding one chunk at a time: value counts, moments and min/max are
        merged exactly; quantile bucket edges come from a uniform sample of up to
        ``quantile_sample`` values per feature (exact while the split has no more values, or
        with None). One chunk gives the same result as ``fit``.
        """
        rows = 0
        moments: dict[str, _Moments] = {n.name: _Moments() for n in self.numeric_features}
        samples: dict[str, _Reservoir] = {}
        counts: dict[str, _TokenCounts] = {}
        for index, df in enumerate(chunks):
            where = "the training data" if index == 0 else f"training chunk {index + 1}"
            check_columns(df, self._columns_read(), where=where)
            rows += df.height
            if df.height == 0:
                continue
            for num in self.numeric_features:
                moments[num.name].add(numeric_column(df, num))
            tokenized = []
            for feat in self.features:
                if isinstance(feat, NumericFeature) and feat.bucketize == "quantile":
                    reservoir = samples.setdefault(feat.name, _Reservoir(quantile_sample))
                    reservoir.add(numeric_column(df, feat).to_numpy())
                elif not (isinstance(feat, NumericFeature) and not feat.bucketize):
                    tokenized.append(feat)
            # the columns' tokens and value counts in parallel (Polars releases the GIL)
            found = _parallel(partial(self._counts, df), tokenized, df.height)
            for feat, frame in zip(tokenized, found, strict=True):
                counts.setdefault(self._table_owner(feat), _TokenCounts()).add_counts(frame)
        if rows == 0:
            raise DataError("cannot fit the feature processor on 0 rows of training data")
        self.numeric_stats_ = {name: m.stats() for name, m in moments.items()}
        self.bucket_edges_ = {
            name: _quantile_edges(r.values(), self._feature(name).num_buckets)  # type: ignore[union-attr]
            for name, r in samples.items()
        }
        self.tables_: dict[str, IdTable] = {}
        for feat in self.features:
            if feat.name in counts or feat.name in self.bucket_edges_:
                self.tables_[feat.name] = self._fit_table(feat, counts.get(feat.name))
        return self

    def _feature(self, name: str) -> Feature:
        return next(f for f in self.features if f.name == name)

    def _fit_table(self, owner: Feature, counts: _TokenCounts | None) -> IdTable:
        if isinstance(owner, NumericFeature) and owner.bucketize == "quantile":
            return IdTable(owner.name, num_buckets=len(self.bucket_edges_[owner.name]) + 1)
        if isinstance(owner, CategoricalFeature) and owner.hash_buckets is not None:
            return IdTable(owner.name, hash_buckets=owner.hash_buckets)
        assert counts is not None
        return IdTable.from_counts(owner.name, counts.total(), owner.min_count)

    def _counts(self, df: pl.DataFrame, feat: Feature) -> pl.DataFrame:
        return _value_counts(self._tokens(df, feat))

    def fit_transform(
        self, df: pl.DataFrame, histories: RowHistories | None = None
    ) -> EncodedFeatures:
        """``fit(df)`` then ``transform(df)``, normalizing each column's tokens once."""
        self._token_memo = {}
        try:
            self.fit(df, histories)
            return self.transform(df, histories)
        finally:
            self._token_memo = None

    def _tokens(self, df: pl.DataFrame, feat: Feature) -> pl.Series:
        """All string tokens of a categorical-like feature (sequence items flattened)."""
        memo = self._token_memo
        if memo is not None and not isinstance(feat, SequenceFeature):
            if feat.name not in memo:
                memo[feat.name] = self._column_tokens(df, feat)
            return memo[feat.name]
        return self._column_tokens(df, feat)

    def _column_tokens(self, df: pl.DataFrame, feat: Feature) -> pl.Series:
        if self._histories is not None and _is_history(feat):
            return self._event_tokens(feat).drop_nulls()  # type: ignore[arg-type]
        if isinstance(feat, SequenceFeature):
            return _sequence_lists(df[feat.column], feat).explode().drop_nulls()
        if isinstance(feat, NumericFeature):  # log_square buckets
            return _log_square_tokens(finite_values(df, feat))
        return normalize_tokens(df[feat.column], feat.name).fill_null(feat.fill_value)

    # ------------------------------------------------------------------ transform
    def transform(self, df: pl.DataFrame, histories: RowHistories | None = None) -> EncodedFeatures:
        """Encode rows; unseen values map to the OOV id, never out of range. With
        ``histories`` (training splits of ``data.history``) the history features are built
        from them as HistoryColumns; without, they are read from the frame's own columns."""
        self._check_fitted()
        self._histories = histories
        try:
            return self._transform(df)
        finally:
            self._histories = None

    def _transform(self, df: pl.DataFrame) -> EncodedFeatures:
        check_columns(df, self._columns_read(), where="the data")
        if self._histories is not None and len(self._histories.ends) != df.height:
            raise DataError(
                f"histories of {len(self._histories.ends):,} rows given for {df.height:,} rows"
            )
        n = df.height
        categorical = np.empty((n, len(self.categorical_features)), dtype=np.int32)
        columns = _parallel(lambda f: self._encode_categorical(df, f), self.categorical_features, n)
        for j, column in enumerate(columns):
            categorical[:, j] = column
        numeric = np.empty((n, len(self.numeric_features)), dtype=np.float32)
        for j, num in enumerate(self.numeric_features):
            numeric[:, j] = self._scale(num, numeric_column(df, num))
        sequences = tuple(self._encode_sequence(df, s) for s in self.sequence_features)
        return EncodedFeatures(categorical, numeric, sequences)

    def _encode_categorical(
        self, df: pl.DataFrame, feat: CategoricalFeature | NumericFeature
    ) -> np.ndarray:
        table = self.tables_[self._table_owner(feat)]
        if isinstance(feat, NumericFeature) and feat.bucketize == "quantile":
            values = numeric_column(df, feat).to_numpy()
            edges = np.asarray(self.bucket_edges_[feat.name])
            return (FIRST_ID + np.searchsorted(edges, values, side="right")).astype(np.int32)
        return table.encode(self._tokens(df, feat))

    def _event_tokens(self, feat: SequenceFeature) -> pl.Series:
        """Tokens of a history feature's event column, one per event (null: missing)."""
        assert self._histories is not None and feat.history is not None
        return normalize_tokens(self._histories.events[feat.history], feat.name)

    def _encode_sequence(
        self, df: pl.DataFrame, feat: SequenceFeature
    ) -> np.ndarray | HistoryColumn:
        table = self.tables_[self._table_owner(feat)]
        if self._histories is not None and _is_history(feat):
            # A missing event value is OOV, not dropped: side fields stay parallel.
            ids = table.encode(self._event_tokens(feat).fill_null(""))
            return self._histories.column(ids)
        lists = _sequence_lists(df[feat.column], feat)
        lengths = lists.list.len().to_numpy().astype(np.int64)
        ids = table.encode(lists.explode().drop_nulls())
        out = np.zeros((df.height, feat.max_len), dtype=np.int32)
        rows = np.repeat(np.arange(df.height), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, np.arange(len(ids)) - starts] = ids
        return out

    def _scale(self, feat: NumericFeature, column: pl.Series) -> np.ndarray:
        x = column.to_numpy().astype(np.float64)
        stats = self.numeric_stats_[feat.name]
        if feat.transform == "standard":
            x = (x - stats["mean"]) / (stats["std"] or 1.0)
        elif feat.transform == "minmax":
            x = (x - stats["min"]) / ((stats["max"] - stats["min"]) or 1.0)
        elif feat.transform == "log":
            x = np.sign(x) * np.log1p(np.abs(x))
        limit = np.finfo(np.float32).max  # a finite float64 beyond it would become inf
        return np.clip(x, -limit, limit).astype(np.float32)

    # ------------------------------------------------------------------ layout and state
    @property
    def layout(self) -> FieldLayout:
        """Fields and table sizes for building a model."""
        self._check_fitted()
        names = list(self.tables_)
        return FieldLayout(
            table_sizes=tuple(self.tables_[n].size for n in names),
            categorical_fields=tuple(f.name for f in self.categorical_features),
            categorical_tables=tuple(
                names.index(self._table_owner(f)) for f in self.categorical_features
            ),
            numeric_fields=tuple(f.name for f in self.numeric_features),
            sequence_fields=tuple(f.name for f in self.sequence_features),
            sequence_tables=tuple(
                names.index(self._table_owner(f)) for f in self.sequence_features
            ),
            sequence_pooling=tuple(self._pooling(f) for f in self.sequence_features),
        )

    def _pooling(self, feat: SequenceFeature) -> Pooling:
        if feat.pooling != "attention":
            return Pooling(feat.pooling)
        options = feat.attention or AttentionOptions()
        categorical = [f.name for f in self.categorical_features]
        return Pooling(
            "attention",
            categorical.index(feat.target or ""),
            tuple(options.hidden_units),
            options.activation,
            options.softmax,
        )

    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "version": STATE_VERSION,
            "features": [f.model_dump(mode="json") for f in self.features],
            "tables": [t.to_dict() for t in self.tables_.values()],
            "numeric_stats": self.numeric_stats_,
            "bucket_edges": self.bucket_edges_,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureProcessor:
        version = state.get("version") if isinstance(state, dict) else None
        if version != STATE_VERSION:
            raise DataError(
                f"processor state version {version!r} is not supported "
                f"(this finalmlp reads version {STATE_VERSION}); re-run training"
            )
        try:
            proc = cls(_FEATURES.validate_python(state["features"]))
            proc.tables_ = {t["name"]: IdTable.from_dict(t) for t in state["tables"]}
            proc.numeric_stats_ = dict(state["numeric_stats"])
            proc.bucket_edges_ = {k: list(v) for k, v in state["bucket_edges"].items()}
        except (KeyError, TypeError, AttributeError, ValueError) as exc:  # incl. ValidationError
            raise DataError(
                f"processor state is damaged ({type(exc).__name__}: {exc}); re-run training"
            ) from None
        return proc

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> FeatureProcessor:
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read processor state {path}: {exc}") from None
        return cls.from_dict(state)

    def _check_fitted(self) -> None:
        if not hasattr(self, "tables_"):
            raise NotFittedError(
                "this FeatureProcessor is not fitted yet; call fit(train_df) or load(path) first"
            )


# ---------------------------------------------------------------------- column helpers
def _is_history(feat: Feature) -> bool:
    return isinstance(feat, SequenceFeature) and feat.history is not None


def finite_values(df: pl.DataFrame, feat: NumericFeature) -> pl.Series:
    """Float64 values with missing, NaN and +-inf (also as text) as null; text is an error."""
    values = parse_floats(df[feat.column], "numeric", lambda row: f"row {row + 1:,}")
    finite = pl.when(pl.col(values.name).is_finite()).then(pl.col(values.name))
    return values.to_frame().select(finite).to_series()


def numeric_column(df: pl.DataFrame, feat: NumericFeature) -> pl.Series:
    """Float64 values with missing and non-finite values replaced by the fill value."""
    return finite_values(df, feat).fill_null(feat.fill_value)


class _Moments:
    """Count, mean, sum of squared deviations, min and max of finite values, merged chunk by
    chunk (Chan et al.'s parallel update); with no finite value the stats of a single 0."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf
        self.chunks, self.first_std = 0, 0.0

    def add(self, values: pl.Series) -> None:
        arr = values.to_numpy()
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return
        n, mean = finite.size, float(finite.mean())
        self.chunks += 1
        if self.chunks == 1:
            self.first_std = float(finite.std())  # one chunk: exactly NumPy's std
        m2 = float(finite.var()) * n
        total = self.count + n
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.count * n / total
        self.mean = mean if self.count == 0 else self.mean + delta * n / total
        self.count = total
        self.low, self.high = (
            min(self.low, float(finite.min())),
            max(self.high, float(finite.max())),
        )

    def stats(self) -> dict[str, float]:
        if self.count == 0:
            return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
        std = self.first_std if self.chunks == 1 else math.sqrt(max(self.m2 / self.count, 0.0))
        return {"mean": self.mean, "std": std, "min": self.low, "max": self.high}


class _Reservoir:
    """A uniform sample of at most ``size`` values over all chunks (the values with the
    smallest random keys); every value while there are no more than ``size``."""

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.rng = np.random.default_rng(0)
        self.kept = np.empty(0)
        self.keys = np.empty(0)

    def add(self, values: np.ndarray) -> None:
        self.kept = np.concatenate([self.kept, values.astype(np.float64, copy=False)])
        self.keys = np.concatenate([self.keys, self.rng.random(len(values))])
        if self.size is not None and len(self.kept) > self.size:
            best = np.argpartition(self.keys, self.size)[: self.size]
            self.kept, self.keys = self.kept[best], self.keys[best]

    def values(self) -> np.ndarray:
        return self.kept


class _TokenCounts:
    """Value counts of one table's tokens, merged over chunks."""

    def __init__(self) -> None:
        self.parts: list[pl.DataFrame] = []

    def add_counts(self, counts: pl.DataFrame) -> None:
        """Add a frame of ``value`` and ``count`` (from ``_value_counts``)."""
        self.parts.append(counts)
        if len(self.parts) > 8:
            self.parts = [self.total()]

    def total(self) -> pl.DataFrame:
        if len(self.parts) == 1:
            return self.parts[0]
        merged = pl.concat(self.parts).group_by("value").agg(pl.col("count").sum())
        return merged


def _value_counts(tokens: pl.Series) -> pl.DataFrame:
    counts = tokens.rename("value").value_counts(name="count")
    return counts.with_columns(pl.col("count").cast(pl.Int64))


PARALLEL_MIN_ROWS = 50_000  # smaller frames (a served request) are encoded on one thread


def _parallel(work: Callable[[Any], _T], items: Sequence[Any], rows: int) -> list[_T]:
    """``[work(x) for x in items]`` on Polars' thread count of threads (columns are independent;
    Polars and NumPy release the GIL); in order. Serial below PARALLEL_MIN_ROWS rows."""
    threads = min(len(items), pl.thread_pool_size())
    if threads <= 1 or rows < PARALLEL_MIN_ROWS:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="finalmlp-encode") as pool:
        return list(pool.map(work, items))


def _quantile_edges(values: np.ndarray, num_buckets: int) -> list[float]:
    qs = np.linspace(0, 1, num_buckets + 1)[1:-1]
    return sorted(set(np.quantile(values, qs).tolist()))


def _log_square_tokens(values: pl.Series) -> pl.Series:
    """Criteo recipe: x -> floor(log(x)^2) for x > 2, else x; as string tokens.

    A missing value is the token ``"null"`` of its own (``fill_value`` is not used): filling
    with a number such as -1 would merge the missing values with the real -1s.
    """
    arr = values.cast(pl.Float64).to_numpy()  # nulls -> NaN
    safe = np.where(arr > 2, arr, math.e)
    bucket = np.where(arr > 2, np.floor(np.log(safe) ** 2), np.floor(arr))
    tokens = pl.Series(values.name, bucket).cast(pl.Int64, strict=False).cast(pl.Utf8)
    return tokens.fill_null(MISSING_BUCKET)


def _sequence_lists(column: pl.Series, feat: SequenceFeature) -> pl.Series:
    """Per row, the list of item tokens (normalized as categorical tokens), truncated.

    A text column is split on the feature's separator; a List (or Array) column of scalars
    (Parquet ``list<string>``, ``list<int64>``) is used as it is; another scalar is one item.
    """
    dtype = column.dtype
    if dtype == pl.Utf8 or isinstance(dtype, pl.Categorical | pl.Enum):
        items = pl.col(column.name).cast(pl.Utf8).fill_null("").str.split(feat.separator)
        inner: Dtype = pl.Utf8
    elif isinstance(dtype, pl.List | pl.Array) and not dtype.inner.is_nested():
        items = pl.col(column.name)
        if isinstance(dtype, pl.Array):
            items = items.arr.to_list()
        items, inner = items.fill_null([]), dtype.inner
    elif dtype.is_nested():
        raise SchemaError(
            f"column {column.name!r} of sequence feature {feat.name!r} has dtype {dtype}; "
            f"expected text such as 'a{feat.separator}b' or a list of strings or integers. "
            "Flatten the nested lists first"
        )
    else:
        items, inner = pl.concat_list(pl.col(column.name)), dtype
    booleans = has_boolean_text(column)
    token = token_expr(pl.element(), inner, column.name, feat.name, booleans)
    lists = column.to_frame().select(items.list.eval(token.drop_nulls())).to_series()
    if feat.truncate == "head":
        return lists.list.head(feat.max_len)
    return lists.list.tail(feat.max_len)
