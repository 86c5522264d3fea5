"""BatchLoader: batch sizes, the folded single-row tail when shuffling, len == iteration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finalmlp.data.dataset import EncodedSplit
from finalmlp.data.split import BatchLoader
from finalmlp.features.processor import EncodedFeatures


def _split(num_rows: int) -> EncodedSplit:
    rows = np.arange(num_rows)
    features = EncodedFeatures(
        categorical=np.stack([rows, rows], axis=1).astype(np.int32),
        numeric=rows[:, None].astype(np.float32),
        sequences=(np.zeros((num_rows, 2), dtype=np.int32),),
    )
    return EncodedSplit(features, label=(rows % 2).astype(np.float32))


@pytest.mark.parametrize(
    ("num_rows", "shuffle", "sizes"),
    [
        (9, True, [4, 5]),  # 4 + 4 + 1: the single row joins the last batch
        (9, False, [4, 4, 1]),  # evaluation keeps the small tail
        (8, True, [4, 4]),
        (10, True, [4, 4, 2]),
        (1, True, [1]),  # nothing to fold into
        (5, True, [5]),
        (0, True, []),
    ],
)
def test_batch_sizes_and_len_agree(num_rows: int, shuffle: bool, sizes: list[int]) -> None:
    loader = BatchLoader(_split(num_rows), batch_size=4, shuffle=shuffle, seed=3)
    batches = list(loader)
    assert [len(b.categorical) for b in batches] == sizes
    assert len(loader) == len(sizes)
    seen = torch.cat([b.numeric[:, 0] for b in batches]) if batches else torch.zeros(0)
    assert sorted(seen.long().tolist()) == list(range(num_rows))  # every row exactly once


def test_shuffled_batches_never_hold_one_row_for_batchnorm() -> None:
    norm = torch.nn.BatchNorm1d(1).train()
    loader = BatchLoader(_split(4 * 16 + 1), batch_size=16, shuffle=True)
    for _ in range(3):  # several epochs, reshuffled
        for batch in loader:
            assert len(batch.numeric) > 1
            norm(batch.numeric)  # raises on a batch of one row in training mode
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        norm(torch.zeros(1, 1))
