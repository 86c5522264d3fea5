"""Batches sliced whole from contiguous encoded arrays: no per-row collate, no worker processes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from finalmlp.batch import Batch
from finalmlp.data.dataset import EncodedSplit


class BatchLoader:
    """Iterates over an encoded split in batches.

    The split's arrays are turned into tensors once (sharing memory with NumPy); each batch is
    a slice (sequential) or one fancy-index gather (shuffled) per array.

    Args:
        split: encoded arrays.
        batch_size: rows per batch (the last batch may be smaller).
        shuffle: reshuffle each epoch with ``seed + epoch``.
        seed: base seed of the shuffle.
    """

    def __init__(
        self, split: EncodedSplit, batch_size: int, shuffle: bool = False, seed: int = 0
    ) -> None:
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_rows = split.num_rows
        self.categorical = _tensor(split.features.categorical)
        self.numeric = _tensor(split.features.numeric)
        self.sequences = tuple(_tensor(s) for s in split.features.sequences)
        self.label = None if split.label is None else _tensor(split.label)

    def __len__(self) -> int:
        return (self.num_rows + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_rows, generator=generator)
            self.epoch += 1
            for start in range(0, self.num_rows, self.batch_size):
                yield self._take(order[start : start + self.batch_size])
        else:
            for start in range(0, self.num_rows, self.batch_size):
                yield self._take(slice(start, start + self.batch_size))

    def _take(self, index: torch.Tensor | slice) -> Batch:
        return Batch(
            categorical=self.categorical[index],
            numeric=self.numeric[index],
            sequences=tuple(s[index] for s in self.sequences),
            label=None if self.label is None else self.label[index],
        )


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing memory with ``array`` (copied only if not contiguous and writable)."""
    return torch.from_numpy(np.require(array, requirements=("C", "W")))
