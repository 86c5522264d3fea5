"""Preparing data larger than memory (``data.streaming``): the training files are read one at
a time, twice: a first pass fits the FeatureProcessor (value counts and moments merged file by
file), a second encodes each file into a Parquet shard. valid/test are encoded in memory as
usual. Everything goes into the data cache (one folder per data config and file state), so
later runs, and every rank of a torchrun job, start from the shards.

Peak memory is about one training file (raw frame + its encoding) plus the merged value counts
and the valid/test arrays, whatever the number of files.
"""

from __future__ import annotations

import glob
import json
import time
import warnings
from dataclasses import replace
from pathlib import Path

from finalmlp.data.badrows import QUARANTINE_SUFFIX
from finalmlp.data.dataset import (
    SPLITS,
    EncodedSplit,
    PreparedData,
    _load_split,
    encode_frame,
    write_cache_entry,
)
from finalmlp.data.readers import read_file
from finalmlp.data.stream import ShardWriter, StreamedSplit
from finalmlp.errors import DataError
from finalmlp.features.processor import FeatureProcessor
from finalmlp.io import atomic_directory
from finalmlp.schema import DataConfig

SHARDS = "train_shards"
_SUFFIXES = {
    "csv": (".csv", ".csv.gz"),
    "tsv": (".tsv", ".tsv.gz", ".txt"),
    "parquet": (".parquet",),
}


def train_files(config: DataConfig) -> list[Path]:
    """The training files of a streaming config: a folder's files of the format (sorted), the
    matches of a glob pattern (sorted), or one file."""
    assert config.train is not None
    path = Path(config.train)
    text = str(config.train)
    suffixes = _SUFFIXES.get(config.format, ())
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(suffixes))
        files = [p for p in files if not p.name.endswith(QUARANTINE_SUFFIX)]
        where = f"the folder {path}"
        hint = f"files ending in {', '.join(suffixes)}"
    elif any(c in text for c in "*?["):
        files = sorted(
            Path(p)
            for p in glob.glob(text)
            if Path(p).is_file() and not p.endswith(QUARANTINE_SUFFIX)
        )
        where = f"the pattern {text}"
        hint = "files that match it"
    else:
        if not path.is_file():
            raise DataError(
                f"data.train {path} does not exist; give a file, a folder or a glob pattern"
            )
        return [path]
    if not files:
        raise DataError(f"{where} holds no training files ({hint}); check data.train")
    for name in ("valid", "test"):
        other = getattr(config, name)
        if other is not None and Path(other).resolve() in {f.resolve() for f in files}:
            raise DataError(
                f"data.{name} {other} is also one of the training files of {where}: the model "
                f"would train on its {name} rows; move it out of the folder or narrow data.train"
            )
    return files


def file_states(files: list[Path]) -> list[list[object]]:
    """What the cache key needs to know of the training files."""
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def prepare_streaming(config: DataConfig, cache_path: Path, mmap: bool = False) -> PreparedData:
    """Fit and encode as the module docstring says, or open what ``cache_path`` holds."""
    assert config.streaming is not None
    start = time.perf_counter()
    if (cache_path / "meta.json").is_file():
        try:
            processor, splits = _open(cache_path, config, mmap)
            stream = _stream(cache_path, config)
            return PreparedData(processor, splits, True, time.perf_counter() - start, stream)
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
    return PreparedData(processor, splits, False, time.perf_counter() - start, stream)


def _stream(cache_path: Path, config: DataConfig) -> StreamedSplit:
    assert config.streaming is not None
    split = StreamedSplit.open(cache_path / SHARDS)
    return replace(split, buffer_rows=config.streaming.buffer_rows)


def _open(
    cache_path: Path, config: DataConfig, mmap: bool
) -> tuple[FeatureProcessor, dict[str, EncodedSplit]]:
    processor = FeatureProcessor.load(cache_path / "processor.json")
    meta = json.loads((cache_path / "meta.json").read_text(encoding="utf-8"))
    if meta["train"] != {"stream": SHARDS}:
        raise ValueError("meta.json does not describe streamed training shards")
    splits = {
        name: _load_split(cache_path, name, meta[name], mmap) for name in SPLITS if name != "train"
    }
    return processor, splits
