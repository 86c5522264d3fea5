"""Compact storage of per-row histories: each event once, each row two numbers.

::

    HistoryColumn
    ├── values   (M,)   int32  encoded items of the behaviour events, sorted by (user, time)
    ├── ends     (N,)   int64  row r's history is values[ends[r] - lengths[r] : ends[r]]
    └── lengths  (N,)   int32  0 .. width

Rows of the same user point into the same run of events, so a history costs 12 bytes per row
(``ends`` + ``lengths``) plus 4 bytes per event, instead of ``4 * width`` bytes per row for a
padded copy. Indexing (``column[rows]``, ``column[a:b]``) gives the padded (n, width) int32
array a batch needs: the oldest item first, the most recent last, then 0s, like any other
sequence feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class HistoryColumn:
    """A (N, width) int32 sequence column stored as events plus per-row offsets.

    Args:
        values: (M,) int32 item ids of the events.
        ends: (N,) int64, one past the row's most recent event in ``values``.
        lengths: (N,) int32 events in the row's history (at most ``width``).
        width: the padded length L of a row.
    """

    ndim = 2
    dtype = np.dtype(np.int32)

    def __init__(self, values: np.ndarray, ends: np.ndarray, lengths: np.ndarray, width: int):
        self.values = np.asarray(values, dtype=np.int32)
        self.ends = np.asarray(ends, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int32)
        self.width = int(width)
        if self.ends.shape != self.lengths.shape or self.ends.ndim != 1:
            raise ValueError("a history column needs ends and lengths of the same length")
        if len(self.ends) and (
            int(self.lengths.max(initial=0)) > self.width
            or int((self.ends - self.lengths).min()) < 0
            or int(self.ends.max()) > len(self.values)
        ):
            raise ValueError("history offsets point outside the events")

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.ends), self.width)

    @property
    def nbytes(self) -> int:
        """Bytes held: the events plus 12 per row."""
        return int(self.values.nbytes + self.ends.nbytes + self.lengths.nbytes)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, key: Any) -> np.ndarray:
        """The padded rows ``key`` (a slice, an int array or a boolean mask): (n, width)."""
        if isinstance(key, int | np.integer):
            return self[np.array([key])][0]
        ends, lengths = self.ends[key], self.lengths[key]
        positions = np.arange(self.width, dtype=np.int64)
        present = positions < lengths[:, None]  # (n, L)
        index = (ends - lengths)[:, None] + positions  # (n, L)
        if len(self.values) == 0:
            return np.zeros((len(ends), self.width), dtype=np.int32)
        gathered = self.values[np.minimum(index, len(self.values) - 1)]
        return np.where(present, gathered, 0).astype(np.int32, copy=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        dense = self[slice(None)]
        return dense if dtype is None else dense.astype(dtype)

    def with_values(self, values: np.ndarray) -> HistoryColumn:
        """The same offsets over other events (a parallel side field)."""
        return HistoryColumn(values, self.ends, self.lengths, self.width)

    def arrays(self) -> dict[str, np.ndarray]:
        """The three arrays and the width, for the data cache."""
        return {
            "values": self.values,
            "ends": self.ends,
            "lengths": self.lengths,
            "width": np.array([self.width], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> HistoryColumn:
        return cls(arrays["values"], arrays["ends"], arrays["lengths"], int(arrays["width"][0]))
