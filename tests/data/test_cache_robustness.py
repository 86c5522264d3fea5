"""The encoded-data cache: what its key covers, damaged entries, unwritable cache folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from finalmlp.data import cache as data_cache
from finalmlp.data.dataset import cache_key, prepare_data
from finalmlp.schema import DataConfig


def _config(tmp_path: Path, **overrides: Any) -> DataConfig:
    train = tmp_path / "train.csv"
    if not train.exists():
        rows = [f"{i % 2},u{i % 7},{i * 0.5}" for i in range(60)]
        train.write_text("label,user,price\n" + "\n".join(rows) + "\n", encoding="utf-8")
    raw: dict[str, Any] = {
        "train": train,
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "price", "type": "numeric"},
        ],
        "cache_dir": tmp_path / "cache",
    }
    return DataConfig.model_validate({**raw, **overrides})


def _entry(config: DataConfig) -> Path:
    assert config.cache_dir is not None
    return Path(config.cache_dir) / cache_key(config)


# ----------------------------------------------------------------------------- key
def test_key_covers_polars_version_and_encoding_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path)
    base = cache_key(config)
    monkeypatch.setattr(pl, "__version__", "0.0.1")
    assert cache_key(config) != base
    monkeypatch.undo()
    assert cache_key(config) == base
    monkeypatch.setattr(data_cache, "ENCODING_VERSION", data_cache.ENCODING_VERSION + 1)
    assert cache_key(config) != base


def test_key_covers_the_libsvm_field_map_content(tmp_path: Path) -> None:
    train = tmp_path / "train.libfm"
    train.write_text("1 0:1 3:1\n0 1:1 4:1\n", encoding="utf-8")
    field_map = tmp_path / "fields.json"
    field_map.write_text(json.dumps({str(i): "a" if i < 3 else "b" for i in range(6)}))
    config = _config(
        tmp_path,
        format="libsvm",
        train=train,
        libsvm={"field_map": field_map},
        features=[{"name": "a", "type": "categorical"}, {"name": "b", "type": "categorical"}],
    )
    before = cache_key(config)
    field_map.write_text(json.dumps({str(i): "a" if i < 4 else "b" for i in range(6)}))
    assert cache_key(config) != before  # same path, other mapping: other encoding


# ----------------------------------------------------------------------------- damaged entries
def _damage_missing_array(entry: Path) -> None:
    (entry / "valid.categorical.npy").unlink()


def _damage_truncated_array(entry: Path) -> None:
    path = entry / "train.numeric.npy"
    path.write_bytes(path.read_bytes()[:60])


def _damage_meta(entry: Path) -> None:
    (entry / "meta.json").write_text("{not json", encoding="utf-8")


def _damage_meta_rows(entry: Path) -> None:
    meta = json.loads((entry / "meta.json").read_text())
    meta["test"]["rows"] += 1
    (entry / "meta.json").write_text(json.dumps(meta))


def _damage_processor(entry: Path) -> None:
    (entry / "processor.json").write_text("[]", encoding="utf-8")


@pytest.mark.parametrize(
    "damage",
    [
        _damage_missing_array,
        _damage_truncated_array,
        _damage_meta,
        _damage_meta_rows,
        _damage_processor,
    ],
    ids=["missing_array", "truncated_npy", "bad_meta_json", "wrong_rows", "bad_processor"],
)
def test_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path: Path, damage: Any) -> None:
    config = _config(tmp_path)
    first = prepare_data(config)
    damage(_entry(config))
    with pytest.warns(UserWarning, match=r"ignoring the damaged data cache .*; rebuilding it"):
        again = prepare_data(config)
    assert not again.from_cache
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(
            again.splits[name].features.categorical, first.splits[name].features.categorical
        )
    assert prepare_data(config).from_cache  # the rebuilt entry is whole again


def test_unwritable_cache_dir_warns_and_continues(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder should go")
    config = _config(tmp_path, cache_dir=blocker / "cache")
    with pytest.warns(UserWarning, match=r"cannot write the data cache .*; continuing without"):
        data = prepare_data(config)
    assert not data.from_cache and data.splits["train"].num_rows == 48
