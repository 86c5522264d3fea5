"""Preparing data larger than memory (``data.streaming``): the training files are read one at
a time, twice: a first pass fits the FeatureProcessor (value counts and moments merged file by
file), a second encodes each file into a Parquet shard. valid/test are encoded in memory as
usual. Everything goes into the data cache (one folder per data config and file state), so
later runs, and every rank of a torchrun job, start from the shards.

Peak memory is about one training file (raw frame + its encoding) plus the merged value counts
and the valid/test arrays, whatever the number of files.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import replace
from pathlib import Path

from finalmlp.data.cache import read_cache_entry, write_cache_entry
from finalmlp.data.files import train_files
from finalmlp.data.frames import encode_frame
from finalmlp.data.readers import read_file
from finalmlp.data.shards import ShardWriter, StreamedSplit
from finalmlp.data.split import EncodedSplit
from finalmlp.features.processor import FeatureProcessor
from finalmlp.io import atomic_directory
from finalmlp.schema import DataConfig

SHARDS = "train_shards"


def prepare_streaming(
    config: DataConfig, cache_path: Path, mmap: bool = False
) -> tuple[FeatureProcessor, dict[str, EncodedSplit], StreamedSplit, bool, float]:
    """Fit and encode as the module docstring says, or open what ``cache_path`` holds.

    Returns:
        The processor, the valid and test splits, the training shards, whether they came
        from the cache, and the seconds it took.
    """
    assert config.streaming is not None
    start = time.perf_counter()
    if (cache_path / "meta.json").is_file():
        try:
            processor, splits, meta = read_cache_entry(cache_path, ("valid", "test"), mmap)
            if meta["train"] != {"stream": SHARDS}:
                raise ValueError("meta.json does not describe streamed training shards")
            stream = _stream(cache_path, config)
            return processor, splits, stream, True, time.perf_counter() - start
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(
                f"ignoring the damaged data cache {cache_path} ({type(exc).__name__}: {exc}); "
                "rebuilding it",
                stacklevel=2,
            )
    files = train_files(config)
    processor = FeatureProcessor(config.features).fit_chunks(
        read_file(f, config, split="train") for f in files
    )
    splits = {}
    for name in ("valid", "test"):
        path = getattr(config, name)
        splits[name] = encode_frame(processor, read_file(Path(path), config, split=name), config)
    with atomic_directory(cache_path) as tmp:
        writer = ShardWriter(tmp / SHARDS, block_rows=config.streaming.block_rows)
        for path in files:
            encoded = encode_frame(processor, read_file(path, config, split="train"), config)
            writer.write(encoded.features, encoded.label)
        writer.close()
        write_cache_entry(tmp, processor, splits, {"train": {"stream": SHARDS}})
    stream = _stream(cache_path, config)
    return processor, splits, stream, False, time.perf_counter() - start


def _stream(cache_path: Path, config: DataConfig) -> StreamedSplit:
    assert config.streaming is not None
    split = StreamedSplit.open(cache_path / SHARDS)
    return replace(split, buffer_rows=config.streaming.buffer_rows)
