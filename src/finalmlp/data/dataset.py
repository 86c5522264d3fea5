"""From a data config to encoded train/valid/test splits, cached on disk: the data layer's
entry point.

The first run reads the raw files, fits the FeatureProcessor on train and encodes every split
(:mod:`finalmlp.data.frames`); the result is cached (:mod:`finalmlp.data.cache`), so a second
run with the same config and data skips all of it. With ``data.streaming`` the training rows
become Parquet shards instead (:mod:`finalmlp.data.streaming`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

from finalmlp.data.cache import (
    ENCODING_VERSION,
    cache_key,
    cache_root,
    load_cache_entry,
    write_cache_entry,
)
from finalmlp.data.frames import encode_frame, frame_histories, load_frames
from finalmlp.data.shards import StreamedSplit
from finalmlp.data.split import SPLITS, EncodedSplit, TrainingSplit
from finalmlp.data.streaming import prepare_streaming
from finalmlp.features.processor import FeatureProcessor
from finalmlp.io import atomic_directory
from finalmlp.schema import DataConfig

__all__ = [
    "ENCODING_VERSION",
    "SPLITS",
    "EncodedSplit",
    "PreparedData",
    "cache_key",
    "cache_root",
    "encode_frame",
    "load_frames",
    "prepare_data",
]


@dataclass(frozen=True)
class PreparedData:
    """The fitted processor and the encoded splits. With ``data.streaming`` the training rows
    are Parquet shards (``train_stream``) and ``splits`` holds valid and test only."""

    processor: FeatureProcessor
    splits: dict[str, EncodedSplit]
    from_cache: bool
    seconds: float
    train_stream: StreamedSplit | None = None

    @property
    def train(self) -> TrainingSplit:
        return self.train_stream if self.train_stream is not None else self.splits["train"]

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split, train first."""
        out = {"train": self.train.num_rows}
        out.update({name: s.num_rows for name, s in self.splits.items() if name != "train"})
        return out


def prepare_data(config: DataConfig, cache: bool = True, mmap: bool = False) -> PreparedData:
    """Fit on train and encode all splits, or load them from the cache.

    Args:
        cache: read and write the encoded-data cache (always, with ``data.streaming``: the
            training shards live there).
        mmap: open cached arrays memory-mapped (read-only; rows are read when a batch needs
            them), as every rank does under torchrun. Needs ``cache``.
    """
    if config.streaming is not None:
        # the shards live in the cache: with data.streaming it is always used
        processor, splits, stream, cached, seconds = prepare_streaming(
            config, cache_root(config) / cache_key(config), mmap
        )
        return PreparedData(processor, splits, cached, seconds, stream)
    start = time.perf_counter()
    cache_path = cache_root(config) / cache_key(config) if cache else None
    if cache_path is not None and (cache_path / "meta.json").is_file():
        entry = load_cache_entry(cache_path, SPLITS, mmap)
        if entry is not None:
            return PreparedData(entry[0], entry[1], True, time.perf_counter() - start)
    frames = load_frames(config)
    histories = frame_histories(frames, config)
    processor = FeatureProcessor(config.features)
    train = frames["train"]
    encoded = processor.fit_transform(train, histories.get("train"))
    splits = {"train": encode_frame(processor, train, config, encoded=encoded)}
    splits.update(
        {
            name: encode_frame(processor, frames[name], config, histories=histories.get(name))
            for name in SPLITS[1:]
        }
    )
    if cache_path is not None:
        try:
            with atomic_directory(cache_path) as tmp:
                write_cache_entry(tmp, processor, splits)
        except OSError as exc:
            warnings.warn(
                f"cannot write the data cache {cache_path} ({exc}); continuing without it. "
                "Set data.cache_dir (or FINALMLP_CACHE_DIR) to a writable folder",
                stacklevel=2,
            )
    return PreparedData(processor, splits, False, time.perf_counter() - start)
