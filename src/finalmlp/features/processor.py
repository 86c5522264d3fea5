"""FeatureProcessor: raw columns -> model-ready int32 ids and float32 values.

Follows the scikit-learn contract: the constructor only stores the schema, ``fit`` (train split
only) learns the state (attributes ending in ``_``), ``transform`` before ``fit`` raises
NotFittedError. The state is JSON (``save``/``load``), never pickle, and the exact same object
is used by training, evaluation, batch scoring and serving.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import TypeAdapter

from finalmlp.columns import check_columns, parse_floats
from finalmlp.errors import DataError, NotFittedError
from finalmlp.features.tables import FIRST_ID, IdTable
from finalmlp.io import atomic_write_text
from finalmlp.layout import FieldLayout
from finalmlp.schema import CategoricalFeature, Feature, NumericFeature, SequenceFeature

STATE_VERSION = 1
_FEATURES = TypeAdapter(list[Feature])


@dataclass(frozen=True)
class EncodedFeatures:
    """Encoded columns of N rows, in FieldLayout order.

    Attributes:
        categorical: (N, C) int32 ids.
        numeric: (N, D) float32 values.
        sequences: one (N, L) int32 array per sequence field, 0-padded.
    """

    categorical: np.ndarray
    numeric: np.ndarray
    sequences: tuple[np.ndarray, ...]

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
        """Raw columns the processor reads."""
        return list(dict.fromkeys(f.column for f in self.features))

    def _table_owner(self, feature: Feature) -> str:
        share = getattr(feature, "share_embedding", None)
        return share if share is not None else feature.name

    # ------------------------------------------------------------------ fit
    def fit(self, df: pl.DataFrame) -> FeatureProcessor:
        """Learn tables and statistics from the train split."""
        check_columns(df, self.columns, where="the training data")
        if df.height == 0:
            raise DataError("cannot fit the feature processor on 0 rows of training data")
        self.numeric_stats_: dict[str, dict[str, float]] = {}
        self.bucket_edges_: dict[str, list[float]] = {}
        for num in self.numeric_features:
            self.numeric_stats_[num.name] = _numeric_stats(numeric_column(df, num))
        tokens: dict[str, list[pl.Series]] = {}
        for feat in self.features:
            if isinstance(feat, NumericFeature) and feat.bucketize == "quantile":
                self.bucket_edges_[feat.name] = _quantile_edges(
                    numeric_column(df, feat), feat.num_buckets
                )
            elif not (isinstance(feat, NumericFeature) and not feat.bucketize):
                tokens.setdefault(self._table_owner(feat), []).append(self._tokens(df, feat))
        self.tables_: dict[str, IdTable] = {}
        for feat in self.features:
            if feat.name in tokens or feat.name in self.bucket_edges_:
                self.tables_[feat.name] = self._fit_table(feat, tokens.get(feat.name, []))
        return self

    def _fit_table(self, owner: Feature, token_lists: list[pl.Series]) -> IdTable:
        if isinstance(owner, NumericFeature) and owner.bucketize == "quantile":
            return IdTable(owner.name, num_buckets=len(self.bucket_edges_[owner.name]) + 1)
        if isinstance(owner, CategoricalFeature) and owner.hash_buckets is not None:
            return IdTable(owner.name, hash_buckets=owner.hash_buckets)
        all_tokens = pl.concat([t.rename("value") for t in token_lists])
        return IdTable.fit(owner.name, all_tokens, owner.min_count)

    def _tokens(self, df: pl.DataFrame, feat: Feature) -> pl.Series:
        """All string tokens of a categorical-like feature (sequence items flattened)."""
        if isinstance(feat, SequenceFeature):
            return _sequence_lists(df[feat.column], feat).explode().drop_nulls()
        if isinstance(feat, NumericFeature):  # log_square buckets
            return _log_square_tokens(numeric_column(df, feat))
        return df[feat.column].cast(pl.Utf8).fill_null(feat.fill_value)

    # ------------------------------------------------------------------ transform
    def transform(self, df: pl.DataFrame) -> EncodedFeatures:
        """Encode rows; unseen values map to the OOV id, never out of range."""
        self._check_fitted()
        check_columns(df, self.columns, where="the data")
        n = df.height
        categorical = np.empty((n, len(self.categorical_features)), dtype=np.int32)
        for j, feat in enumerate(self.categorical_features):
            categorical[:, j] = self._encode_categorical(df, feat)
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

    def _encode_sequence(self, df: pl.DataFrame, feat: SequenceFeature) -> np.ndarray:
        lists = _sequence_lists(df[feat.column], feat)
        lengths = lists.list.len().to_numpy().astype(np.int64)
        ids = self.tables_[self._table_owner(feat)].encode(lists.explode().drop_nulls())
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
        return x.astype(np.float32)

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
        if state.get("version") != STATE_VERSION:
            raise DataError(
                f"processor state version {state.get('version')!r} is not supported "
                f"(this finalmlp reads version {STATE_VERSION}); re-run training"
            )
        proc = cls(_FEATURES.validate_python(state["features"]))
        proc.tables_ = {t["name"]: IdTable.from_dict(t) for t in state["tables"]}
        proc.numeric_stats_ = dict(state["numeric_stats"])
        proc.bucket_edges_ = {k: list(v) for k, v in state["bucket_edges"].items()}
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
def numeric_column(df: pl.DataFrame, feat: NumericFeature) -> pl.Series:
    """Float64 values with missing and NaN replaced by the fill value; text is an error."""
    values = parse_floats(df[feat.column], "numeric", lambda row: f"row {row + 1:,}")
    return values.fill_nan(None).fill_null(feat.fill_value)


def _numeric_stats(values: pl.Series) -> dict[str, float]:
    arr = values.to_numpy()
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        finite = np.zeros(1)
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


def _quantile_edges(values: pl.Series, num_buckets: int) -> list[float]:
    qs = np.linspace(0, 1, num_buckets + 1)[1:-1]
    return sorted(set(np.quantile(values.to_numpy(), qs).tolist()))


def _log_square_tokens(values: pl.Series) -> pl.Series:
    """Criteo recipe: x -> floor(log(x)^2) for x > 2, else x; as string tokens."""
    arr = values.to_numpy()
    safe = np.where(arr > 2, arr, math.e)
    bucket = np.where(arr > 2, np.floor(np.log(safe) ** 2), np.floor(arr))
    return pl.Series(values.name, bucket.astype(np.int64)).cast(pl.Utf8)


def _sequence_lists(column: pl.Series, feat: SequenceFeature) -> pl.Series:
    lists = (
        column.cast(pl.Utf8)
        .fill_null("")
        .str.split(feat.separator)
        .list.eval(pl.element().str.strip_chars())
        .list.eval(pl.element().filter(pl.element() != ""))
    )
    if feat.truncate == "head":
        return lists.list.head(feat.max_len)
    return lists.list.tail(feat.max_len)
