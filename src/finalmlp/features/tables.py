"""Id tables: a vocabulary (values by train frequency) or a stable hash into buckets.

Ids: 0 padding, 1 out-of-vocabulary (rare in train, or never seen), 2.. values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

PAD_ID = 0
OOV_ID = 1
FIRST_ID = 2


def stable_hash(value: str, buckets: int) -> int:
    """Bucket of a value, identical across processes, machines and library versions."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return FIRST_ID + int.from_bytes(digest, "little") % buckets


@dataclass
class IdTable:
    """Maps string values to ids for one embedding table.

    Attributes:
        name: the feature that owns the table (others may share it).
        values: vocabulary in id order (id = FIRST_ID + position); empty when hashing.
        hash_buckets: number of hash buckets, or None for a vocabulary.
        num_buckets: for quantile buckets of a numeric feature (ids come from edges, no values).
    """

    name: str
    values: list[str] = field(default_factory=list)
    hash_buckets: int | None = None
    num_buckets: int | None = None

    @property
    def size(self) -> int:
        if self.hash_buckets is not None:
            return FIRST_ID + self.hash_buckets
        if self.num_buckets is not None:
            return FIRST_ID + self.num_buckets
        return FIRST_ID + len(self.values)

    @classmethod
    def fit(cls, name: str, tokens: pl.Series, min_count: int) -> IdTable:
        """Vocabulary of the tokens seen at least ``min_count`` times, most frequent first."""
        counts = tokens.rename("value").value_counts(name="count")
        return cls.from_counts(name, counts, min_count)

    @classmethod
    def from_counts(cls, name: str, counts: pl.DataFrame, min_count: int) -> IdTable:
        """As ``fit``, from a frame of ``value`` and ``count`` (ties: value order)."""
        kept = counts.filter(pl.col("count") >= min_count).sort(
            ["count", "value"], descending=[True, False]
        )
        return cls(name=name, values=kept["value"].to_list())

    def encode(self, tokens: pl.Series) -> np.ndarray:
        """Ids of string tokens (int32); unseen and rare values get OOV_ID."""
        if self.hash_buckets is not None:
            uniques = tokens.unique().drop_nulls()
            ids = [stable_hash(v, self.hash_buckets) for v in uniques.to_list()]
            mapped = tokens.replace_strict(uniques, ids, default=OOV_ID, return_dtype=pl.Int32)
        else:
            values, value_ids = self._mapping
            mapped = tokens.replace_strict(values, value_ids, default=OOV_ID, return_dtype=pl.Int32)
        return mapped.to_numpy().astype(np.int32, copy=False)

    @cached_property
    def _mapping(self) -> tuple[pl.Series, pl.Series]:
        """The vocabulary and its ids as Series, built once (a list of millions of values
        costs more to convert than to look up)."""
        values = pl.Series("value", self.values, dtype=pl.Utf8)
        ids = pl.Series("id", np.arange(FIRST_ID, FIRST_ID + len(self.values), dtype=np.int32))
        return values, ids

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "size": self.size}
        if self.hash_buckets is not None:
            out["hash_buckets"] = self.hash_buckets
        elif self.num_buckets is not None:
            out["num_buckets"] = self.num_buckets
        else:
            out["values"] = self.values
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IdTable:
        return cls(
            name=raw["name"],
            values=list(raw.get("values", [])),
            hash_buckets=raw.get("hash_buckets"),
            num_buckets=raw.get("num_buckets"),
        )
