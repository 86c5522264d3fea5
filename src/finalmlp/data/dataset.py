"""From a data config to encoded train/valid/test arrays, cached on disk.

The first run reads the raw files, fits the FeatureProcessor on train and encodes every split;
the result is cached under a key made of the data config, the files' sizes and modification
times (and the content hash of a libsvm field map), the Polars version and ENCODING_VERSION, so
a second run with the same config and data skips all of it. The cache is an optimisation only:
an unreadable entry is rebuilt and a failed write leaves the run going, each with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from finalmlp import __version__
from finalmlp.errors import DataError
from finalmlp.features.processor import STATE_VERSION, EncodedFeatures, FeatureProcessor
from finalmlp.io import atomic_directory, atomic_write_text
from finalmlp.schema import DataConfig, SplitOptions

if TYPE_CHECKING:  # stream.py imports this module (through the loader)
    from finalmlp.data.stream import StreamedSplit

SPLITS = ("train", "valid", "test")
# Bump when reading or encoding code changes what the cached arrays hold for the same config.
ENCODING_VERSION = 2  # 2: libsvm fields with several indices are no longer joined


@dataclass(frozen=True)
class EncodedSplit:
    """One split, model-ready: encoded features, labels (N,) float32, group ids (N,) or None."""

    features: EncodedFeatures
    label: np.ndarray | None
    group: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return self.features.num_rows


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
    def train(self) -> EncodedSplit | StreamedSplit:
        return self.train_stream if self.train_stream is not None else self.splits["train"]

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split, train first."""
        out = {"train": self.train.num_rows}
        out.update({name: s.num_rows for name, s in self.splits.items() if name != "train"})
        return out


def load_frames(config: DataConfig) -> dict[str, pl.DataFrame]:
    """Raw train/valid/test frames; missing valid/test are split off train at random."""
    from finalmlp.data.badrows import warn_bad_rows
    from finalmlp.data.readers import read_table

    if config.format == "synthetic":
        from finalmlp.data.synthetic import generate_synthetic
        from finalmlp.schema import SyntheticOptions

        frames = {"train": generate_synthetic(config.synthetic or SyntheticOptions())}
    else:
        assert config.train is not None
        paths = {name: getattr(config, name) for name in SPLITS if getattr(config, name)}
        # the files at once: reading and checking are mostly Polars work, outside the GIL
        with ThreadPoolExecutor(max_workers=len(paths), thread_name_prefix="finalmlp-read") as pool:
            futures = {
                name: pool.submit(read_table, Path(p), config, split=name, warn=False)
                for name, p in paths.items()
            }
            tables = {name: future.result() for name, future in futures.items()}
        for table in tables.values():  # from this thread: a warning names the user's call
            warn_bad_rows(table.bad_rows)
        frames = {name: table.frame for name, table in tables.items()}
    missing = [s for s in ("valid", "test") if s not in frames]
    if missing:
        frames.update(_random_split(frames.pop("train"), missing, config.split or SplitOptions()))
    return frames


def _random_split(
    frame: pl.DataFrame, missing: list[str], options: SplitOptions
) -> dict[str, pl.DataFrame]:
    fractions = {"valid": options.valid_fraction, "test": options.test_fraction}
    order = np.random.default_rng(options.seed).permutation(frame.height)
    out, start = {}, 0
    for name in missing:
        count = round(fractions[name] * frame.height)
        if count == 0:
            raise DataError(
                f"data.split.{name}_fraction={fractions[name]} leaves no {name} rows out of "
                f"{frame.height}; give a {name} file or a larger fraction"
            )
        out[name] = frame[np.sort(order[start : start + count])]
        start += count
    out["train"] = frame[np.sort(order[start:])]
    return out


def encode_frame(
    processor: FeatureProcessor,
    frame: pl.DataFrame,
    config: DataConfig,
    *,
    labelled: bool = True,
    encoded: EncodedFeatures | None = None,
) -> EncodedSplit:
    """Encode one raw frame; with ``labelled`` also its label and group (when present).

    Scoring passes ``labelled=False``: neither label nor group is then computed, whatever
    columns the frame holds. ``encoded``: the frame's features already encoded (fit_transform).
    """
    label = None
    if labelled and config.label in frame.columns:
        label = frame[config.label].cast(pl.Float32).to_numpy().astype(np.float32, copy=False)
    group = None
    if labelled and config.group is not None and config.group in frame.columns:
        # Missing ids form one group of their own (a null rank would be cast from NaN).
        keys = frame[config.group].cast(pl.Utf8).fill_null("")
        group = keys.rank("dense").to_numpy().astype(np.int64)
    features = encoded if encoded is not None else processor.transform(frame)
    return EncodedSplit(features, label, group)


def prepare_data(config: DataConfig, cache: bool = True, mmap: bool = False) -> PreparedData:
    """Fit on train and encode all splits, or load them from the cache.

    Args:
        cache: read and write the encoded-data cache (always, with ``data.streaming``: the
            training shards live there).
        mmap: open cached arrays memory-mapped (read-only; rows are read when a batch needs
            them), as every rank does under torchrun. Needs ``cache``.
    """
    if config.streaming is not None:
        from finalmlp.data.streaming import prepare_streaming

        # the shards live in the cache: with data.streaming it is always used
        return prepare_streaming(config, cache_root(config) / cache_key(config), mmap)
    start = time.perf_counter()
    cache_path = cache_root(config) / cache_key(config) if cache else None
    if cache_path is not None and (cache_path / "meta.json").is_file():
        cached = _load_cache(cache_path, mmap)
        if cached is not None:
            return PreparedData(*cached, True, time.perf_counter() - start)
    frames = load_frames(config)
    processor = FeatureProcessor(config.features)
    train = frames["train"]
    splits = {
        "train": encode_frame(processor, train, config, encoded=processor.fit_transform(train))
    }
    splits.update({name: encode_frame(processor, frames[name], config) for name in SPLITS[1:]})
    if cache_path is not None:
        try:
            _save_cache(cache_path, processor, splits)
        except OSError as exc:
            warnings.warn(
                f"cannot write the data cache {cache_path} ({exc}); continuing without it. "
                "Set data.cache_dir (or FINALMLP_CACHE_DIR) to a writable folder",
                stacklevel=2,
            )
    return PreparedData(processor, splits, False, time.perf_counter() - start)


def cache_root(config: DataConfig) -> Path:
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    env = os.environ.get("FINALMLP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "finalmlp"


def cache_key(config: DataConfig) -> str:
    """Hash of everything the encoded arrays depend on."""
    parts: dict[str, object] = {
        # the shuffle window is applied when the shards are read, not when they are written
        "config": config.model_dump(
            mode="json", exclude={"cache_dir": True, "streaming": {"buffer_rows"}}
        ),
        "state_version": STATE_VERSION,
        "encoding_version": ENCODING_VERSION,
        "package": __version__,
        "polars": pl.__version__,
    }
    if config.streaming is not None:
        from finalmlp.data.streaming import file_states, train_files

        parts["train_files"] = file_states(train_files(config))
    for name in SPLITS:
        path = getattr(config, name)
        if path is not None and Path(path).is_file():
            stat = Path(path).stat()
            parts[name] = [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]
    field_map = config.libsvm.field_map if config.libsvm is not None else None
    if field_map is not None and Path(field_map).is_file():  # small: hash its content
        parts["field_map"] = hashlib.sha256(Path(field_map).read_bytes()).hexdigest()
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _save_cache(path: Path, processor: FeatureProcessor, splits: dict[str, EncodedSplit]) -> None:
    with atomic_directory(path) as tmp:
        write_cache_entry(tmp, processor, splits)


def write_cache_entry(
    folder: Path,
    processor: FeatureProcessor,
    splits: dict[str, EncodedSplit],
    meta: dict[str, object] | None = None,
) -> None:
    """processor.json, ``<split>.<array>.npy`` for each split and meta.json (``meta`` plus the
    arrays and rows of each split) into ``folder``."""
    processor.save(folder / "processor.json")
    meta = dict(meta or {})
    for name, split in splits.items():
        arrays = _arrays_of(split)
        for key, array in arrays.items():
            np.save(folder / f"{name}.{key}.npy", array)
        meta[name] = {"arrays": sorted(arrays), "rows": split.num_rows}
    atomic_write_text(folder / "meta.json", json.dumps(meta))


def _arrays_of(split: EncodedSplit) -> dict[str, np.ndarray]:
    arrays = {"categorical": split.features.categorical, "numeric": split.features.numeric}
    arrays.update({f"seq{i}": s for i, s in enumerate(split.features.sequences)})
    if split.label is not None:
        arrays["label"] = split.label
    if split.group is not None:
        arrays["group"] = split.group
    return arrays


def _load_cache(
    path: Path, mmap: bool = False
) -> tuple[FeatureProcessor, dict[str, EncodedSplit]] | None:
    """The cached processor and splits, or None (with a warning) when the entry is damaged."""
    try:
        processor = FeatureProcessor.load(path / "processor.json")
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        splits = {name: _load_split(path, name, meta[name], mmap) for name in SPLITS}
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:  # DataError is a ValueError
        warnings.warn(
            f"ignoring the damaged data cache {path} ({type(exc).__name__}: {exc}); rebuilding it",
            stacklevel=3,
        )
        return None
    return processor, splits


def _load_split(path: Path, name: str, info: dict[str, object], mmap: bool) -> EncodedSplit:
    keys = info["arrays"]
    if not isinstance(keys, list):
        raise TypeError(f"meta.json: arrays of {name} must be a list")
    mode: Literal["r"] | None = "r" if mmap else None
    arrays = {
        k: np.load(path / f"{name}.{k}.npy", mmap_mode=mode, allow_pickle=False) for k in keys
    }
    short = [k for k, a in arrays.items() if a.ndim == 0 or len(a) != info["rows"]]
    if short:
        raise ValueError(f"{name} arrays {short} do not hold {info['rows']} rows")
    num_seq = sum(k.startswith("seq") for k in arrays)
    features = EncodedFeatures(
        arrays["categorical"],
        arrays["numeric"],
        tuple(arrays[f"seq{i}"] for i in range(num_seq)),
    )
    return EncodedSplit(features, arrays.get("label"), arrays.get("group"))
