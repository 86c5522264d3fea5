"""Encoded splits and how they are batched: the contract between the data layer and training.

::

    TrainingSplit (protocol)              what the trainer needs of a training split
    ├── EncodedSplit                      in memory: NumPy arrays (this module), BatchLoader
    └── StreamedSplit                     Parquet shards on disk (finalmlp.data.shards),
                                          StreamingLoader

A split's labels are (N, T) float32 for T tasks: 0/1, or NaN where a row has no label for
that task (``data.labels`` with a blank cell). Both kinds of split give a loader with the same
interface (:class:`Loader`), so the trainer never asks which kind it holds.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from finalmlp.batch import Batch
from finalmlp.features.history_column import HistoryColumn
from finalmlp.features.processor import EncodedFeatures

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class LabelCounts:
    """Per task: rows with a label, and how many of those are 1."""

    labelled: tuple[int, ...]
    positives: tuple[int, ...]

    @classmethod
    def of(cls, label: np.ndarray) -> LabelCounts:
        """Counts of an (N, T) label matrix (NaN: no label)."""
        matrix = np.asarray(label)
        return cls(
            tuple(int(n) for n in (~np.isnan(matrix)).sum(axis=0)),
            tuple(int(n) for n in (matrix == 1).sum(axis=0)),
        )

    def merged(self, other: LabelCounts) -> LabelCounts:
        return LabelCounts(
            tuple(a + b for a, b in zip(self.labelled, other.labelled, strict=True)),
            tuple(a + b for a, b in zip(self.positives, other.positives, strict=True)),
        )


class Loader(Protocol):
    """Batches of one training split, epoch after epoch (see BatchLoader, StreamingLoader)."""

    epoch: int

    def __len__(self) -> int: ...

    def global_rows(self, index: int) -> int: ...

    def batches(self, skip: int = 0) -> Generator[Batch, None, None]: ...


class TrainingSplit(Protocol):
    """What the trainer needs of a training split, in memory or streamed."""

    @property
    def num_rows(self) -> int: ...

    def label_counts(self) -> LabelCounts | None: ...

    def loader(
        self, batch_size: int, *, shuffle: bool, seed: int, rank: int, world_size: int
    ) -> Loader: ...


def as_label_matrix(label: np.ndarray | None) -> np.ndarray | None:
    """Labels as (N, T) float32: a 1-d (N,) array is one task."""
    if label is None:
        return None
    array = np.asarray(label, dtype=np.float32)
    return array[:, None] if array.ndim == 1 else array


@dataclass(frozen=True)
class EncodedSplit:
    """One split in memory, model-ready.

    Attributes:
        features: encoded features of N rows.
        label: (N, T) float32 0/1, NaN where missing; (N,) is read as one task; None when
            scoring unlabelled rows.
        group: (N,) group ids (group AUC), or None.
    """

    features: EncodedFeatures
    label: np.ndarray | None
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.label is not None and np.ndim(self.label) == 1:
            object.__setattr__(self, "label", as_label_matrix(self.label))

    @property
    def num_rows(self) -> int:
        return self.features.num_rows

    @property
    def num_tasks(self) -> int:
        return 0 if self.label is None else int(self.label.shape[1])

    def label_counts(self) -> LabelCounts | None:
        return None if self.label is None else LabelCounts.of(self.label)

    def loader(
        self, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> BatchLoader:
        return BatchLoader(self, batch_size, shuffle, seed, rank, world_size)


class BatchLoader:
    """Iterates over an encoded split in batches.

    The split's arrays are turned into tensors once (sharing memory with NumPy); each batch is
    a slice (sequential) or one fancy-index gather (shuffled) per array.

    When shuffling (training), a last batch of a single row is folded into the one before it,
    which then holds ``batch_size + 1`` rows: BatchNorm cannot normalise one row in training
    mode, and dropping the row would leave it out of every epoch. Unshuffled (evaluation) the
    last batch is whatever remains. ``len(loader)`` is the number of batches iteration yields.

    Under torchrun (``world_size > 1``) every rank draws the same global permutation and
    batches, and takes its own contiguous part of each global batch: the global batch is what
    the config says, whatever the number of processes. Memory-mapped arrays (the encoded-data
    cache opened with ``mmap``) are gathered row by row per batch, so no rank reads every row
    into memory.

    Args:
        split: encoded arrays.
        batch_size: rows per (global) batch (the last may be smaller, or one larger: see above).
        shuffle: reshuffle each epoch with ``seed + epoch``.
        seed: base seed of the shuffle.
        rank: this process's rank; world_size: the number of processes.
        rows: (start, stop) to iterate over only these rows, in order (an evaluation shard).
    """

    def __init__(
        self,
        split: EncodedSplit,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        self.first_row, stop = rows if rows is not None else (0, split.num_rows)
        self.num_rows = stop - self.first_row
        self.categorical = _tensor(split.features.categorical)
        self.numeric = _tensor(split.features.numeric)
        self.sequences = tuple(_tensor(s) for s in split.features.sequences)
        self.label = None if split.label is None else _tensor(split.label)

    def __len__(self) -> int:
        full, rest = divmod(self.num_rows, self.batch_size)
        if self.shuffle and rest == 1 and full > 0:
            return full  # the single leftover row joins the last full batch
        return full + (rest > 0)

    def _bounds(self) -> Iterator[tuple[int, int]]:
        """(start, stop) of each batch; the last one ends at num_rows."""
        count = len(self)
        for i in range(count):
            start = i * self.batch_size
            yield start, self.num_rows if i == count - 1 else start + self.batch_size

    def global_rows(self, index: int) -> int:
        """Rows of the ``index``-th (1-based) global batch, over all ranks."""
        count = len(self)
        start = (index - 1) * self.batch_size
        return (self.num_rows if index == count else start + self.batch_size) - start

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, skip: int = 0) -> Generator[Batch, None, None]:
        """The batches of one pass, leaving out the first ``skip`` (already trained on before a
        resume: the permutation is the same, those rows are simply not gathered)."""
        bounds = list(self._bounds())[skip:]
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_rows, generator=generator)
            self.epoch += 1
            for start, stop in bounds:
                lo, hi = part_bounds(stop - start, self.rank, self.world_size)
                yield self._take(order[start + lo : start + hi])
        else:
            for start, stop in bounds:
                yield self._take(slice(self.first_row + start, self.first_row + stop))

    def _take(self, index: torch.Tensor | slice) -> Batch:
        return Batch(
            categorical=_rows(self.categorical, index),
            numeric=_rows(self.numeric, index),
            sequences=tuple(_rows(s, index) for s in self.sequences),
            label=None if self.label is None else _rows(self.label, index),
        )


def part_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous part [lo, hi) of ``size`` rows for ``rank``; parts differ by at most one."""
    base, extra = divmod(size, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _tensor(array: np.ndarray | HistoryColumn) -> torch.Tensor | np.ndarray | HistoryColumn:
    """A tensor sharing memory with ``array``; a memory map stays one (read per batch), and so
    does a history column (its padded rows are gathered per batch)."""
    if isinstance(array, np.memmap | HistoryColumn):
        return array
    return torch.from_numpy(np.require(array, requirements=("C", "W")))


def _rows(
    source: torch.Tensor | np.ndarray | HistoryColumn, index: torch.Tensor | slice
) -> torch.Tensor:
    if isinstance(source, torch.Tensor):
        return source[index]
    picked = source[index.numpy() if isinstance(index, torch.Tensor) else index]
    return torch.from_numpy(np.array(picked))  # a private, writable copy of these rows only
