"""The encoded-data cache: one folder per data config and file state.

A folder holds ``processor.json``, ``<split>.<array>.npy`` for each split and ``meta.json``.
Its key is made of the data config, the files' sizes and modification times (and the content
hash of a libsvm field map), the Polars version and ENCODING_VERSION, so a second run with the
same config and data skips reading and encoding. The cache is an optimisation only: an
unreadable entry is rebuilt and a failed write leaves the run going, each with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from finalmlp import __version__
from finalmlp.data.files import file_states, train_files
from finalmlp.data.split import SPLITS, EncodedSplit
from finalmlp.features.history_column import HistoryColumn
from finalmlp.features.processor import STATE_VERSION, EncodedFeatures, FeatureProcessor
from finalmlp.io import atomic_write_text
from finalmlp.schema import DataConfig

# Bump when reading or encoding code changes what the cached arrays hold for the same config.
# 2: libsvm fields with several indices are no longer joined; 3: labels are (N, T) with NaN
# for a missing label; 4: history features (data.history) are stored as events + offsets
# (``seq<i>.values/.ends/.lengths/.width``), sequence features gained pooling options.
ENCODING_VERSION = 4


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
    for i, seq in enumerate(split.features.sequences):
        if isinstance(seq, HistoryColumn):  # each event once, two numbers per row
            arrays.update({f"seq{i}.{part}": a for part, a in seq.arrays().items()})
        else:
            arrays[f"seq{i}"] = seq
    if split.label is not None:
        arrays["label"] = split.label
    if split.group is not None:
        arrays["group"] = split.group
    return arrays


def read_cache_entry(
    path: Path, names: tuple[str, ...] = SPLITS, mmap: bool = False
) -> tuple[FeatureProcessor, dict[str, EncodedSplit], dict[str, object]]:
    """The processor, the splits ``names`` and meta.json of a cache folder.

    Raises:
        OSError, ValueError, KeyError, TypeError, EOFError: a damaged entry.
    """
    processor = FeatureProcessor.load(path / "processor.json")
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    splits = {name: _load_split(path, name, meta[name], mmap) for name in names}
    return processor, splits, meta


def load_cache_entry(
    path: Path, names: tuple[str, ...] = SPLITS, mmap: bool = False
) -> tuple[FeatureProcessor, dict[str, EncodedSplit], dict[str, object]] | None:
    """:func:`read_cache_entry`, or None (with a warning) when the entry is damaged."""
    try:
        return read_cache_entry(path, names, mmap)
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:  # DataError is a ValueError
        warnings.warn(
            f"ignoring the damaged data cache {path} ({type(exc).__name__}: {exc}); rebuilding it",
            stacklevel=3,
        )
        return None


def _sequence(arrays: dict[str, np.ndarray], key: str) -> np.ndarray | HistoryColumn:
    if key in arrays:
        return arrays[key]
    parts = {p: arrays[f"{key}.{p}"] for p in ("values", "ends", "lengths", "width")}
    return HistoryColumn.from_arrays(parts)


def _load_split(path: Path, name: str, info: object, mmap: bool) -> EncodedSplit:
    if not isinstance(info, dict):
        raise TypeError(f"meta.json: {name} must be an object")
    keys = info["arrays"]
    if not isinstance(keys, list):
        raise TypeError(f"meta.json: arrays of {name} must be a list")
    mode: Literal["r"] | None = "r" if mmap else None
    arrays = {
        k: np.load(path / f"{name}.{k}.npy", mmap_mode=mode, allow_pickle=False) for k in keys
    }
    per_event = (".values", ".width")  # history parts that are not one per row
    short = [
        k
        for k, a in arrays.items()
        if not k.endswith(per_event) and (a.ndim == 0 or len(a) != info["rows"])
    ]
    if short:
        raise ValueError(f"{name} arrays {short} do not hold {info['rows']} rows")
    num_seq = len({k.split(".")[0] for k in arrays if k.startswith("seq")})
    features = EncodedFeatures(
        arrays["categorical"],
        arrays["numeric"],
        tuple(_sequence(arrays, f"seq{i}") for i in range(num_seq)),
    )
    return EncodedSplit(features, arrays.get("label"), arrays.get("group"))
