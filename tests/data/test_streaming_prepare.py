"""data.streaming: the training files are fitted and encoded one at a time into shards that
hold exactly what in-memory preparation makes of the same rows; the cache is reused; a
model trains on the stream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from finalmlp.config import parse_config
from finalmlp.data.dataset import cache_key, prepare_data
from finalmlp.data.files import train_files
from finalmlp.data.shards import StreamingLoader
from finalmlp.data.synthetic import generate_synthetic, synthetic_features
from finalmlp.errors import DataError
from finalmlp.features.processor import FeatureProcessor
from finalmlp.schema import SyntheticOptions
from finalmlp.train.run import train_from_config

OPTIONS = SyntheticOptions(num_rows=6_000, num_categorical=4, num_numeric=2, max_cardinality=300)


def _features() -> list[dict[str, Any]]:
    features = synthetic_features(OPTIONS)
    # one quantile-bucketed copy of a numeric column: the merged sample is exact here
    features.append(
        {
            "name": "n0_q",
            "source": "n0",
            "type": "numeric",
            "bucketize": "quantile",
            "num_buckets": 8,
        }
    )
    return features


def _write_parts(folder: Path, fmt: str) -> pl.DataFrame:
    frame = generate_synthetic(OPTIONS)
    train, valid, test = frame[:4_000], frame[4_000:5_000], frame[5_000:]
    parts = folder / "train"
    parts.mkdir()
    for i, start in enumerate(range(0, 4_000, 1_500)):  # 1500 + 1500 + 1000 rows
        chunk = train[start : start + 1_500]
        if fmt == "parquet":
            chunk.write_parquet(parts / f"part-{i}.parquet")
        else:
            chunk.write_csv(parts / f"part-{i}.csv")
    (parts / "notes.txt").write_text("not data")  # other files in the folder are left alone
    for name, split in (("valid", valid), ("test", test)):
        if fmt == "parquet":
            split.write_parquet(folder / f"{name}.parquet")
        else:
            split.write_csv(folder / f"{name}.csv")
    return train


def _config(folder: Path, fmt: str, streaming: bool = True, **train: Any) -> Any:
    ext = "parquet" if fmt == "parquet" else "csv"
    data: dict[str, Any] = {
        "format": fmt,
        "train": str(folder / "train"),
        "valid": str(folder / f"valid.{ext}"),
        "test": str(folder / f"test.{ext}"),
        "features": _features(),
        "cache_dir": str(folder / "cache"),
    }
    if streaming:
        data["streaming"] = {"buffer_rows": 1_000, "block_rows": 256}
    raw = {
        "data": data,
        "model": {
            "name": "finalmlp",
            "embedding_dim": 8,
            "mlp1": {"hidden_units": [32]},
            "mlp2": {"hidden_units": [32]},
            "fs_hidden_units": [16],
            "num_heads": 2,
        },
        "train": {
            "batch_size": 256,
            "max_epochs": 3,
            "embedding_l2": 0.0,
            "progress": False,
            **train,
        },
    }
    return parse_config(raw, origin="test")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_shards_hold_what_in_memory_preparation_makes(tmp_path: Path, fmt: str) -> None:
    train_frame = _write_parts(tmp_path, fmt)
    config = _config(tmp_path, fmt)
    prepared = prepare_data(config.data)
    assert not prepared.from_cache
    assert prepared.rows == {"train": 4_000, "valid": 1_000, "test": 1_000}
    assert [p.name for p in train_files(config.data)] == [f"part-{i}.{fmt}" for i in range(3)]

    whole = FeatureProcessor(config.data.features).fit(train_frame)
    assert prepared.processor.to_dict()["tables"] == whole.to_dict()["tables"]
    ours, theirs = prepared.processor.numeric_stats_, whole.numeric_stats_
    for name in theirs:
        for key in ("mean", "std", "min", "max"):
            assert ours[name][key] == pytest.approx(theirs[name][key], rel=1e-9, abs=1e-12)
    assert prepared.processor.bucket_edges_ == whole.bucket_edges_

    # the shards, read in order, are the in-memory encoding of the concatenated files
    expected = whole.transform(train_frame)
    stream = prepared.train_stream
    assert stream is not None
    batches = list(StreamingLoader(stream, 4_000, shuffle=False))
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0].categorical.numpy(), expected.categorical)
    np.testing.assert_allclose(batches[0].numeric.numpy(), expected.numeric, rtol=1e-6)
    label = batches[0].label
    assert label is not None
    np.testing.assert_array_equal(
        label.numpy(), train_frame["label"].cast(pl.Float32).to_numpy()[:, None]
    )
    assert stream.labels is not None
    assert stream.labels.positives == (int(train_frame["label"].sum()),)

    again = prepare_data(config.data)  # the second run opens the cache
    assert again.from_cache and again.rows == prepared.rows
    assert again.train_stream is not None and again.train_stream.buffer_rows == 1_000


def test_training_on_the_stream_learns(tmp_path: Path) -> None:
    _write_parts(tmp_path, "parquet")
    metrics = train_from_config(_config(tmp_path, "parquet", max_epochs=4, seed=3))
    assert metrics["rows"]["train"] == 4_000
    assert metrics["test"]["auc"] > 0.6  # the generator's signal is learnable (in memory ~0.7)


def test_streaming_config_errors_name_the_fix(tmp_path: Path) -> None:
    _write_parts(tmp_path, "csv")
    config = _config(tmp_path, "csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no training files"):
        train_files(config.data.model_copy(update={"train": empty}))
    with pytest.raises(DataError, match="no training files"):
        train_files(config.data.model_copy(update={"train": tmp_path / "train" / "*.tsv"}))
    with pytest.raises(ValueError, match=r"needs data\.valid and data\.test"):
        raw = config.data.model_dump()
        raw["test"] = None
        type(config.data).model_validate(raw)


def test_quarantine_files_and_eval_files_in_the_train_folder(tmp_path: Path) -> None:
    _write_parts(tmp_path, "csv")
    config = _config(tmp_path, "csv")
    (tmp_path / "train" / "part-0.csv.bad_rows.csv").write_text("line,reason\n")
    assert [p.name for p in train_files(config.data)] == [f"part-{i}.csv" for i in range(3)]
    leaky = config.data.model_copy(update={"valid": tmp_path / "train" / "part-1.csv"})
    with pytest.raises(DataError, match="would train on its valid rows"):
        train_files(leaky)


def test_the_shuffle_window_does_not_invalidate_the_shards(tmp_path: Path) -> None:
    _write_parts(tmp_path, "parquet")
    config = _config(tmp_path, "parquet")
    wider = config.data.model_copy(
        update={"streaming": config.data.streaming.model_copy(update={"buffer_rows": 5_000})}
    )
    assert cache_key(config.data) == cache_key(wider)
    prepare_data(config.data)
    again = prepare_data(wider)
    assert again.from_cache
    assert again.train_stream is not None and again.train_stream.buffer_rows == 5_000
