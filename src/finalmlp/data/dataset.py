"""From a data config to encoded train/valid/test arrays, cached on disk.

The first run reads the raw files, fits the FeatureProcessor on train and encodes every split;
the result is cached under a key made of the data config, the files' sizes and modification
times and the encoding version, so a second run with the same config and data skips all of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from finalmlp import __version__
from finalmlp.errors import DataError
from finalmlp.features.processor import STATE_VERSION, EncodedFeatures, FeatureProcessor
from finalmlp.io import atomic_directory, atomic_write_text
from finalmlp.schema import DataConfig, SplitOptions

SPLITS = ("train", "valid", "test")


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
    processor: FeatureProcessor
    splits: dict[str, EncodedSplit]
    from_cache: bool
    seconds: float


def load_frames(config: DataConfig) -> dict[str, pl.DataFrame]:
    """Raw train/valid/test frames; missing valid/test are split off train at random."""
    from finalmlp.data.readers import read_file

    if config.format == "synthetic":
        from finalmlp.data.synthetic import generate_synthetic
        from finalmlp.schema import SyntheticOptions

        frames = {"train": generate_synthetic(config.synthetic or SyntheticOptions())}
    else:
        assert config.train is not None
        frames = {"train": read_file(config.train, config)}
        for name in ("valid", "test"):
            path = getattr(config, name)
            if path is not None:
                frames[name] = read_file(path, config)
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
    processor: FeatureProcessor, frame: pl.DataFrame, config: DataConfig
) -> EncodedSplit:
    """Encode one raw frame (label and group when present)."""
    label = None
    if config.label in frame.columns:
        label = frame[config.label].cast(pl.Float32).to_numpy().astype(np.float32, copy=False)
    group = None
    if config.group is not None and config.group in frame.columns:
        # Missing ids form one group of their own (a null rank would be cast from NaN).
        keys = frame[config.group].cast(pl.Utf8).fill_null("")
        group = keys.rank("dense").to_numpy().astype(np.int64)
    return EncodedSplit(processor.transform(frame), label, group)


def prepare_data(config: DataConfig, cache: bool = True) -> PreparedData:
    """Fit on train and encode all splits, or load them from the cache."""
    start = time.perf_counter()
    cache_path = cache_root(config) / cache_key(config) if cache else None
    if cache_path is not None and (cache_path / "meta.json").is_file():
        processor, splits = _load_cache(cache_path)
        return PreparedData(processor, splits, True, time.perf_counter() - start)
    frames = load_frames(config)
    processor = FeatureProcessor(config.features).fit(frames["train"])
    splits = {name: encode_frame(processor, frames[name], config) for name in SPLITS}
    if cache_path is not None:
        _save_cache(cache_path, processor, splits)
    return PreparedData(processor, splits, False, time.perf_counter() - start)


def cache_root(config: DataConfig) -> Path:
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    env = os.environ.get("FINALMLP_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "finalmlp"


def cache_key(config: DataConfig) -> str:
    """Hash of everything the encoded arrays depend on."""
    parts: dict[str, object] = {
        "config": config.model_dump(mode="json", exclude={"cache_dir"}),
        "state_version": STATE_VERSION,
        "package": __version__,
    }
    for name in SPLITS:
        path = getattr(config, name)
        if path is not None and Path(path).exists():
            stat = Path(path).stat()
            parts[name] = [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _save_cache(path: Path, processor: FeatureProcessor, splits: dict[str, EncodedSplit]) -> None:
    with atomic_directory(path) as tmp:
        processor.save(tmp / "processor.json")
        meta: dict[str, dict[str, object]] = {}
        for name, split in splits.items():
            arrays = _arrays_of(split)
            for key, array in arrays.items():
                np.save(tmp / f"{name}.{key}.npy", array)
            meta[name] = {"arrays": sorted(arrays), "rows": split.num_rows}
        atomic_write_text(tmp / "meta.json", json.dumps(meta))


def _arrays_of(split: EncodedSplit) -> dict[str, np.ndarray]:
    arrays = {"categorical": split.features.categorical, "numeric": split.features.numeric}
    arrays.update({f"seq{i}": s for i, s in enumerate(split.features.sequences)})
    if split.label is not None:
        arrays["label"] = split.label
    if split.group is not None:
        arrays["group"] = split.group
    return arrays


def _load_cache(path: Path) -> tuple[FeatureProcessor, dict[str, EncodedSplit]]:
    processor = FeatureProcessor.load(path / "processor.json")
    meta = json.loads((path / "meta.json").read_text())
    splits = {}
    for name, info in meta.items():
        arrays = {k: np.load(path / f"{name}.{k}.npy") for k in info["arrays"]}
        num_seq = sum(k.startswith("seq") for k in arrays)
        features = EncodedFeatures(
            arrays["categorical"],
            arrays["numeric"],
            tuple(arrays[f"seq{i}"] for i in range(num_seq)),
        )
        splits[name] = EncodedSplit(features, arrays.get("label"), arrays.get("group"))
    return processor, splits
