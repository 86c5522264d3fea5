"""Encoded Parquet shards and the StreamingLoader: every row once per epoch, the same rows as
the in-memory loader, seeded order, resume by skipping, rank shares, bounded windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finalmlp.data.dataset import EncodedSplit
from finalmlp.data.shards import MANIFEST, ShardWriter, StreamedSplit, StreamingLoader
from finalmlp.data.split import BatchLoader
from finalmlp.errors import DataError
from finalmlp.features.processor import EncodedFeatures


def _split(num_rows: int, first: int = 0) -> EncodedSplit:
    """Row r carries its id r in categorical column 0, numeric column 0 and the sequence."""
    rows = np.arange(first, first + num_rows)
    features = EncodedFeatures(
        categorical=np.stack([rows, rows % 7], axis=1).astype(np.int32),
        numeric=np.stack([rows, -rows], axis=1).astype(np.float32),
        sequences=(np.stack([rows, rows + 1, rows + 2], axis=1).astype(np.int32),),
    )
    return EncodedSplit(features, label=(rows % 3 == 0).astype(np.float32))


def _write(folder: Path, chunks: list[int], block_rows: int) -> StreamedSplit:
    writer = ShardWriter(folder, block_rows=block_rows)
    first = 0
    for n in chunks:
        split = _split(n, first)
        writer.write(split.features, split.label)
        first += n
    return writer.close()


def _ids(batches: list) -> list[int]:
    return [int(i) for b in batches for i in b.categorical[:, 0]]


def test_manifest_counts_rows_blocks_and_positives(tmp_path: Path) -> None:
    split = _write(tmp_path, [250, 130], block_rows=100)
    assert split.num_rows == 380
    assert [b.rows for b in split.blocks] == [100, 100, 50, 100, 30]
    assert split.labels is not None
    assert split.labels.positives == (int((np.arange(380) % 3 == 0).sum()),)
    assert split.labels.labelled == (380,)
    assert (split.num_categorical, split.num_numeric, split.sequence_lengths) == (2, 2, (3,))
    reopened = StreamedSplit.open(tmp_path)
    assert reopened == split


def test_unshuffled_stream_equals_the_in_memory_loader(tmp_path: Path) -> None:
    stream = _write(tmp_path, [250, 130], block_rows=64)
    memory = _split(380)
    ours = list(StreamingLoader(stream, 48, shuffle=False, buffer_rows=100))
    theirs = list(BatchLoader(memory, 48, shuffle=False))
    assert len(ours) == len(theirs) == 8
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.categorical, b.categorical)
        assert torch.equal(a.numeric, b.numeric)
        assert torch.equal(a.sequences[0], b.sequences[0])
        assert a.label is not None and b.label is not None
        assert torch.equal(a.label, b.label)
        assert a.categorical.dtype == torch.int32 and a.numeric.dtype == torch.float32


@pytest.mark.parametrize(("rows", "sizes_tail"), [(385, [64, 65]), (384, [64, 64]), (390, [6])])
def test_shuffled_epoch_yields_every_row_once(tmp_path: Path, rows: int, sizes_tail: list) -> None:
    stream = _write(tmp_path, [rows - 100, 100], block_rows=50)
    loader = StreamingLoader(stream, 64, shuffle=True, seed=5, buffer_rows=120)
    for _ in range(2):
        batches = list(loader.batches())
        assert len(batches) == len(loader)
        assert sorted(_ids(batches)) == list(range(rows))
        assert [b.size for b in batches][-len(sizes_tail) :] == sizes_tail
        assert all(b.size == 64 for b in batches[: -len(sizes_tail)])
        assert sum(loader.global_rows(i) for i in range(1, len(loader) + 1)) == rows
        for b in batches:  # rows stay whole: every column of a row moves together
            ids = b.categorical[:, 0]
            assert torch.equal(b.numeric[:, 1], -ids.float())
            assert torch.equal(b.sequences[0][:, 2], ids + 2)
            assert b.label is not None
            assert torch.equal(b.label, (ids % 3 == 0).float().unsqueeze(-1))  # (B, T = 1)


def test_order_is_seeded_per_epoch_and_mixes_blocks(tmp_path: Path) -> None:
    stream = _write(tmp_path, [1000], block_rows=100)
    a = StreamingLoader(stream, 100, seed=1, buffer_rows=400)
    b = StreamingLoader(stream, 100, seed=1, buffer_rows=400)
    first_a, first_b = _ids(list(a.batches())), _ids(list(b.batches()))
    assert first_a == first_b
    assert _ids(list(a.batches())) != first_a  # the next epoch has another order
    batch = np.array(first_a[:100])
    assert len(set(batch // 100)) >= 3  # one batch draws on several blocks of its window
    assert first_a != sorted(first_a)


def test_skip_resumes_the_same_pass(tmp_path: Path) -> None:
    stream = _write(tmp_path, [700], block_rows=64)
    full = StreamingLoader(stream, 50, seed=9, buffer_rows=200)
    resumed = StreamingLoader(stream, 50, seed=9, buffer_rows=200)
    everything = _ids(list(full.batches()))
    tail = _ids(list(resumed.batches(skip=5)))
    assert tail == everything[250:]


def test_ranks_take_disjoint_equal_shares(tmp_path: Path) -> None:
    stream = _write(tmp_path, [500, 230], block_rows=60)
    loaders = [
        StreamingLoader(stream, 40, seed=2, rank=r, world_size=2, buffer_rows=100) for r in (0, 1)
    ]
    assert len(loaders[0]) == len(loaders[1])
    runs = [list(loader.batches()) for loader in loaders]
    assert [b.size for b in runs[0]] == [20] * len(loaders[0])
    ids0, ids1 = set(_ids(runs[0])), set(_ids(runs[1]))
    assert not ids0 & ids1
    assert len(ids0) == len(ids1) == 20 * len(loaders[0])
    assert loaders[0].global_rows(1) == 40


def test_more_ranks_than_blocks_is_an_error(tmp_path: Path) -> None:
    stream = _write(tmp_path, [50], block_rows=64)
    with pytest.raises(DataError, match="blocks for 2 processes"):
        StreamingLoader(stream, 10, rank=0, world_size=2)


def test_changed_or_foreign_manifest_is_a_clear_error(tmp_path: Path) -> None:
    stream = _write(tmp_path, [100], block_rows=64)
    meta = json.loads((tmp_path / MANIFEST).read_text())
    meta["shards"][0]["row_groups"] = [60, 40]
    (tmp_path / MANIFEST).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="holds 64 rows, the manifest says 60"):
        list(StreamingLoader(StreamedSplit.open(tmp_path), 10, shuffle=False))
    meta["version"] = 99
    (tmp_path / MANIFEST).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format version 99"):
        StreamedSplit.open(tmp_path)
    assert stream.num_rows == 100


def test_negative_seeds_small_batches_and_in_order_batches(tmp_path: Path) -> None:
    stream = _write(tmp_path, [300], block_rows=100)
    shuffled = list(StreamingLoader(stream, 64, seed=-5, buffer_rows=100).batches())
    assert sorted(_ids(shuffled)) == list(range(300))  # a negative train.seed works
    with pytest.raises(DataError, match="smaller than the 4 processes"):
        StreamingLoader(stream, 3, rank=0, world_size=4)
    batch = next(iter(StreamingLoader(stream, 50, shuffle=False)))
    batch.categorical[0, 0] = 7  # in-order batches own writable memory (not Arrow's buffers)
    assert int(batch.categorical[0, 0]) == 7
