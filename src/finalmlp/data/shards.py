"""Out-of-core training data: encoded Parquet shards, streamed through a shuffle buffer.

For training sets larger than memory. Preprocessing (``finalmlp.data.streaming``) writes the
encoded training rows as Parquet shards, one per input file, each in row groups ("blocks")
of ``block_rows`` rows; a ``manifest.json`` lists shards, blocks and column widths. Training
then reads blocks, never the whole split:

- each epoch the blocks are put in a random order (``seed + epoch``);
- blocks are read by a background thread (PyArrow releases the GIL) a few blocks ahead;
- read blocks fill a window of ``buffer_rows`` rows, the window is permuted and cut into
  batches; the rows left over (fewer than a batch) go on into the next window.

Peak memory is about two windows plus the blocks read ahead, whatever the split's size.
The order is a window shuffle, not a global permutation: a batch mixes rows of the blocks in
its window. With the default window (1M rows) and blocks (64k rows) every batch draws from
about 16 random blocks of the whole split.

Under torchrun each rank owns a fixed, balanced share of the blocks (round robin over the
blocks in manifest order) and reads only those: each epoch has the same number of steps on
every rank (the minimum over ranks; a rank's rows beyond it wait for a later epoch's order),
and a step's global batch is ``batch_size`` rows split over the ranks as BatchLoader splits it.

Columns in a shard: ``categorical`` (fixed-size lists of C int32), ``numeric`` (D float32),
``seq0``.. (L_s int32), ``label`` (T float32, NaN where a task has no label); a width of 0 is
not stored.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from finalmlp.batch import Batch
from finalmlp.data.split import LabelCounts, part_bounds
from finalmlp.errors import DataError
from finalmlp.features.processor import EncodedFeatures
from finalmlp.io import atomic_write_text

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: labels of T tasks, counted per task
DEFAULT_BLOCK_ROWS = 65_536
DEFAULT_BUFFER_ROWS = 1_000_000
READ_AHEAD_BLOCKS = 4


@dataclass(frozen=True)
class Block:
    """One row group of one shard."""

    shard: str
    index: int
    rows: int


@dataclass(frozen=True)
class StreamedSplit:
    """A split stored as encoded Parquet shards (see the module docstring).

    Attributes:
        folder: where the shards and manifest.json are.
        blocks: every row group, in manifest order.
        num_categorical, num_numeric: C and D; sequence_lengths: L per sequence field.
        labels: rows with a label and positives, per task (None without labels).
        buffer_rows: rows of the shuffle window when training on it (data.streaming).
    """

    folder: Path
    blocks: tuple[Block, ...]
    num_categorical: int
    num_numeric: int
    sequence_lengths: tuple[int, ...]
    labels: LabelCounts | None
    buffer_rows: int = DEFAULT_BUFFER_ROWS

    @property
    def num_rows(self) -> int:
        return sum(b.rows for b in self.blocks)

    @property
    def num_tasks(self) -> int:
        return 0 if self.labels is None else len(self.labels.labelled)

    def label_counts(self) -> LabelCounts | None:
        return self.labels

    def loader(
        self, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> StreamingLoader:
        return StreamingLoader(self, batch_size, shuffle, seed, rank, world_size)

    @classmethod
    def open(cls, folder: Path) -> StreamedSplit:
        try:
            meta = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the shard manifest {folder / MANIFEST}: {exc}") from exc
        if meta.get("version") != FORMAT_VERSION:
            raise DataError(
                f"{folder / MANIFEST} has format version {meta.get('version')}, expected "
                f"{FORMAT_VERSION}; delete the folder to have the shards written again"
            )
        blocks = tuple(
            Block(shard["file"], i, int(rows))
            for shard in meta["shards"]
            for i, rows in enumerate(shard["row_groups"])
        )
        labels = meta.get("labels")
        return cls(
            folder,
            blocks,
            int(meta["categorical"]),
            int(meta["numeric"]),
            tuple(int(n) for n in meta["sequences"]),
            None
            if labels is None
            else LabelCounts(
                tuple(int(n) for n in labels["labelled"]),
                tuple(int(n) for n in labels["positives"]),
            ),
        )

    def read_block(self, block: Block) -> tuple[EncodedFeatures, np.ndarray | None]:
        """The encoded rows and labels of one block."""
        path = self.folder / block.shard
        try:
            table = pq.ParquetFile(path).read_row_group(block.index)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read row group {block.index} of {path}: {exc}") from exc
        if table.num_rows != block.rows:
            raise DataError(
                f"{path} row group {block.index} holds {table.num_rows} rows, the manifest "
                f"says {block.rows}: the shards changed after they were written; delete "
                f"{self.folder} to have them written again"
            )
        n = table.num_rows
        features = EncodedFeatures(
            _matrix(table, "categorical", self.num_categorical, np.int32, n),
            _matrix(table, "numeric", self.num_numeric, np.float32, n),
            tuple(
                _matrix(table, f"seq{i}", width, np.int32, n)
                for i, width in enumerate(self.sequence_lengths)
            ),
        )
        label = None
        if "label" in table.column_names:
            tasks = self.num_tasks or 1
            label = _matrix(table, "label", tasks, np.float32, n)
        return features, label


def _matrix(table: pa.Table, name: str, width: int, dtype: type, rows: int) -> np.ndarray:
    if width == 0:
        return np.zeros((rows, 0), dtype=dtype)
    column = table.column(name).combine_chunks()
    return column.values.to_numpy().astype(dtype, copy=False).reshape(rows, width)


class ShardWriter:
    """Writes encoded chunks as shards of a StreamedSplit; ``close()`` writes the manifest.

    Example:
        >>> writer = ShardWriter(folder)
        >>> for chunk in chunks:
        ...     writer.write(features, label)
        >>> split = writer.close()
    """

    def __init__(self, folder: Path, block_rows: int = DEFAULT_BLOCK_ROWS) -> None:
        self.folder = folder
        self.block_rows = block_rows
        self.shards: list[dict[str, Any]] = []
        self.widths: tuple[int, int, tuple[int, ...]] | None = None
        self.labels: LabelCounts | None = None
        self.unlabelled = False
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, features: EncodedFeatures, label: np.ndarray | None) -> None:
        widths = (
            features.categorical.shape[1],
            features.numeric.shape[1],
            tuple(s.shape[1] for s in features.sequences),
        )
        if self.widths is None:
            self.widths = widths
        elif widths != self.widths:
            raise DataError(f"encoded chunk widths {widths} differ from the first {self.widths}")
        n = features.num_rows
        if n == 0:
            return
        columns: dict[str, pa.Array] = {}
        for name, array in (("categorical", features.categorical), ("numeric", features.numeric)):
            if array.shape[1]:
                columns[name] = _fixed_lists(array)
        for i, seq in enumerate(features.sequences):
            columns[f"seq{i}"] = _fixed_lists(np.asarray(seq))
        if label is not None:
            matrix = np.asarray(label, dtype=np.float32).reshape(n, -1)  # (N,) is one task
            columns["label"] = _fixed_lists(matrix)
            counts = LabelCounts.of(matrix)
            self.labels = counts if self.labels is None else self.labels.merged(counts)
        else:
            self.unlabelled = True
        name = f"shard-{len(self.shards):05d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(
            pa.table(columns),
            tmp,
            row_group_size=self.block_rows,
            compression="lz4",
            use_dictionary=False,
            write_statistics=False,
        )
        metadata = pq.ParquetFile(tmp).metadata
        groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        tmp.replace(self.folder / name)
        self.shards.append({"file": name, "rows": n, "row_groups": groups})

    def close(self) -> StreamedSplit:
        categorical, numeric, sequences = self.widths or (0, 0, ())
        labels = None
        if self.labels is not None and not self.unlabelled:
            labels = {
                "labelled": list(self.labels.labelled),
                "positives": list(self.labels.positives),
            }
        meta = {
            "version": FORMAT_VERSION,
            "rows": sum(s["rows"] for s in self.shards),
            "labels": labels,
            "categorical": categorical,
            "numeric": numeric,
            "sequences": list(sequences),
            "shards": self.shards,
        }
        atomic_write_text(self.folder / MANIFEST, json.dumps(meta, indent=1))
        return StreamedSplit.open(self.folder)


def _fixed_lists(array: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(array).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, array.shape[1])


class StreamingLoader:
    """Batches of a StreamedSplit through a shuffle window; the interface of BatchLoader.

    Args:
        split: the shards.
        batch_size: rows per (global) batch.
        shuffle: shuffle blocks and windows each epoch (``seed + epoch``); without it blocks
            are read in order and rows stay in order.
        seed: base seed.
        rank, world_size: this process's share of the blocks (see the module docstring).
        buffer_rows: rows of a shuffle window (default: the split's).
    """

    def __init__(
        self,
        split: StreamedSplit,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        buffer_rows: int | None = None,
    ) -> None:
        if batch_size < world_size:
            raise DataError(
                f"train.batch_size {batch_size} is smaller than the {world_size} processes: "
                "every process needs at least one row of each batch"
            )
        if len(split.blocks) < world_size:
            raise DataError(
                f"{split.folder} has {len(split.blocks)} blocks for {world_size} processes; "
                "each process needs at least one: write the shards with smaller blocks"
            )
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        self.buffer_rows = max(buffer_rows or split.buffer_rows, batch_size)
        self.blocks = split.blocks[rank::world_size]
        lo, hi = part_bounds(batch_size, rank, world_size)
        self.local_batch = hi - lo
        if world_size == 1:
            self.num_rows = split.num_rows
            full, rest = divmod(self.num_rows, batch_size)
            # as BatchLoader: a last single row joins the batch before it when shuffling
            self._count = full if (shuffle and rest == 1 and full > 0) else full + (rest > 0)
        else:
            # every rank takes the same number of full local batches
            per_rank = [sum(b.rows for b in split.blocks[r::world_size]) for r in range(world_size)]
            local = [
                np.subtract(*part_bounds(batch_size, r, world_size)[::-1])
                for r in range(world_size)
            ]
            self._count = min(rows // int(size) for rows, size in zip(per_rank, local, strict=True))
            self.num_rows = self._count * batch_size
        if self._count == 0:
            raise DataError(
                f"{split.folder}: {split.num_rows} rows make no batch of {batch_size} for "
                f"{world_size} processes"
            )

    def __len__(self) -> int:
        return self._count

    def global_rows(self, index: int) -> int:
        """Rows of the ``index``-th (1-based) global batch, over all ranks."""
        if index < self._count:
            return self.batch_size
        return self.num_rows - (self._count - 1) * self.batch_size

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()

    def batches(self, skip: int = 0) -> Generator[Batch, None, None]:
        """The batches of one pass, leaving out the first ``skip`` (as BatchLoader: the same
        order as an uninterrupted pass; skipped rows are read but not gathered)."""
        seed = [self.seed % 2**64, self.epoch]  # a negative seed is a valid train.seed too
        rng = np.random.default_rng(seed) if self.shuffle else None
        if self.shuffle:
            self.epoch += 1
        order = list(self.blocks)
        if rng is not None:
            order = [order[i] for i in rng.permutation(len(order))]
        fold = self.shuffle and self.world_size == 1 and self.batch_size > 1
        emitted, held = 0, None
        for rows in self._chunks(order, rng):
            if held is not None:
                if fold and rows.rows == 1:  # only ever the very last chunk
                    held = _Rows.concat([held, rows])
                    continue
                emitted += 1
                if emitted > skip:
                    yield held.batch()
                if emitted == self._count:
                    return
            held = rows
        if held is not None and emitted < self._count and emitted + 1 > skip:
            yield held.batch()

    def _chunks(self, order: Sequence[Block], rng: np.random.Generator | None) -> Iterator[_Rows]:
        """Local batches in order: full ones, then whatever the last window leaves."""
        parts: list[_Rows] = []
        held = 0
        reader = _ReadAhead(self.split, order)
        try:
            for rows in reader:
                parts.append(rows)
                held += rows.rows
                if held < self.buffer_rows:
                    continue
                gathered, parts = _Rows.concat(parts), []  # the blocks are freed once joined
                window = _mixed(gathered, rng)
                del gathered
                full = window.rows - window.rows % self.local_batch
                for start in range(0, full, self.local_batch):
                    yield window.slice(start, start + self.local_batch)
                parts = [window.slice(full, window.rows)] if full < window.rows else []
                held = window.rows - full
            if parts:
                gathered, parts = _Rows.concat(parts), []
                window = _mixed(gathered, rng)
                del gathered
                for start in range(0, window.rows, self.local_batch):
                    yield window.slice(start, min(start + self.local_batch, window.rows))
        finally:
            reader.close()


def _mixed(rows: _Rows, rng: np.random.Generator | None) -> _Rows:
    return rows if rng is None else rows.take(rng.permutation(rows.rows))


@dataclass
class _Rows:
    """Encoded rows held in memory (a window, a block, a batch)."""

    features: EncodedFeatures
    label: np.ndarray | None
    last: bool = False

    @property
    def rows(self) -> int:
        return self.features.num_rows

    @classmethod
    def empty(cls, split: StreamedSplit) -> _Rows:
        features = EncodedFeatures(
            np.zeros((0, split.num_categorical), np.int32),
            np.zeros((0, split.num_numeric), np.float32),
            tuple(np.zeros((0, n), np.int32) for n in split.sequence_lengths),
        )
        tasks = split.num_tasks
        return cls(features, None if split.labels is None else np.zeros((0, tasks), np.float32))

    @classmethod
    def concat(cls, parts: Sequence[_Rows]) -> _Rows:
        if len(parts) == 1:
            return parts[0]
        first = parts[0].features
        features = EncodedFeatures(
            np.concatenate([p.features.categorical for p in parts]),
            np.concatenate([p.features.numeric for p in parts]),
            tuple(
                np.concatenate([p.features.sequences[i] for p in parts])
                for i in range(len(first.sequences))
            ),
        )
        labels = [p.label for p in parts if p.label is not None]
        label = np.concatenate(labels) if len(labels) == len(parts) else None
        return cls(features, label)

    def take(self, index: np.ndarray) -> _Rows:
        f = self.features
        return _Rows(
            EncodedFeatures(
                f.categorical[index], f.numeric[index], tuple(s[index] for s in f.sequences)
            ),
            None if self.label is None else self.label[index],
        )

    def slice(self, start: int, stop: int) -> _Rows:
        return self.take(slice(start, stop))  # type: ignore[arg-type]

    def batch(self) -> Batch:
        f = self.features
        return Batch(
            categorical=_own(f.categorical),
            numeric=_own(f.numeric),
            sequences=tuple(_own(np.asarray(s)) for s in f.sequences),
            label=None if self.label is None else _own(self.label),
        )


def _own(array: np.ndarray) -> torch.Tensor:
    """A tensor over ``array``, copied when it is not contiguous or not writable (a view of
    Arrow's read-only buffers when rows are read in order)."""
    return torch.from_numpy(np.require(array, requirements=("C", "W")))


class _ReadAhead:
    """Reads blocks in a background thread, up to READ_AHEAD_BLOCKS ahead of the consumer."""

    _DONE = object()

    def __init__(self, split: StreamedSplit, order: Sequence[Block]) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD_BLOCKS)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(split, list(order)), name="finalmlp-shard-reader", daemon=True
        )
        self.thread.start()

    def _run(self, split: StreamedSplit, order: list[Block]) -> None:
        try:
            for block in order:
                if self.stop.is_set():
                    return
                features, label = split.read_block(block)
                self._put(_Rows(features, label))
            self._put(self._DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[_Rows]:
        while True:
            item = self.queue.get()
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
