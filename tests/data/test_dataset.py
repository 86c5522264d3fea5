"""prepare_data: encoded-data cache (hits, misses, atomic writes), random splits, group ids."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from finalmlp.data.dataset import SPLITS, PreparedData, cache_key, load_frames, prepare_data
from finalmlp.errors import DataError
from finalmlp.schema import DataConfig


def _write_csv(path: Path, num_rows: int, seed: int = 0) -> Path:
    """label, user (u0..u4), rowid (0..N-1), price: a row is identified by its rowid."""
    rng = np.random.default_rng(seed)
    lines = ["label,user,rowid,price"]
    for row in range(num_rows):
        lines.append(f"{rng.integers(0, 2)},u{rng.integers(0, 5)},{row},{rng.normal():.4f}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _config(tmp_path: Path, train: Path, **overrides: Any) -> DataConfig:
    raw: dict[str, Any] = {
        "train": train,
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "rowid", "type": "numeric"},  # transform none: encoded value == raw value
            {"name": "price", "type": "numeric", "transform": "standard"},
        ],
        "cache_dir": tmp_path / "cache",
    }
    return DataConfig.model_validate({**raw, **overrides})


def _split_files(tmp_path: Path) -> dict[str, Path]:
    return {name: _write_csv(tmp_path / f"{name}.csv", 30, seed=i) for i, name in enumerate(SPLITS)}


def _assert_same_data(first: PreparedData, second: PreparedData) -> None:
    assert first.processor.to_dict() == second.processor.to_dict()
    assert first.processor.layout == second.processor.layout
    assert set(first.splits) == set(second.splits) == set(SPLITS)
    for name in SPLITS:
        a, b = first.splits[name], second.splits[name]
        for x, y in [
            (a.features.categorical, b.features.categorical),
            (a.features.numeric, b.features.numeric),
            (a.label, b.label),
            (a.group, b.group),
        ]:
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
        assert len(a.features.sequences) == len(b.features.sequences)


def _row_ids(data: PreparedData, name: str) -> np.ndarray:
    return data.splits[name].features.numeric[:, 0].astype(np.int64)  # the rowid column


# ----------------------------------------------------------------------------- cache
def test_second_call_is_served_from_cache_with_identical_data(tmp_path: Path) -> None:
    files = _split_files(tmp_path)
    config = _config(tmp_path, files["train"], valid=files["valid"], test=files["test"])
    first = prepare_data(config)
    second = prepare_data(config)
    assert (first.from_cache, second.from_cache) == (False, True)
    _assert_same_data(first, second)
    assert second.splits["train"].features.categorical.dtype == np.int32
    assert second.splits["train"].label is not None
    assert second.splits["train"].label.dtype == np.float32
    # The fitted processor still encodes raw rows after the round trip.
    np.testing.assert_array_equal(
        second.splits["test"].features.categorical, first.splits["test"].features.categorical
    )


def test_cache_directory_is_complete_and_leaves_no_temp_dirs(tmp_path: Path) -> None:
    files = _split_files(tmp_path)
    config = _config(tmp_path, files["train"], valid=files["valid"], test=files["test"])
    prepare_data(config)
    entries = sorted((tmp_path / "cache").iterdir())
    assert [e.name for e in entries] == [cache_key(config)]
    names = {p.name for p in entries[0].iterdir()}
    assert {"meta.json", "processor.json", "train.categorical.npy", "test.label.npy"} <= names
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


def test_failed_cache_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _split_files(tmp_path)
    config = _config(tmp_path, files["train"], valid=files["valid"], test=files["test"])
    real_save = np.save
    calls: list[str] = []

    def failing_save(file: Any, array: np.ndarray, *args: Any, **kwargs: Any) -> None:
        calls.append(str(file))
        if len(calls) == 3:
            raise OSError("disk full")
        real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.warns(UserWarning, match=r"cannot write the data cache .*disk full.*continuing"):
        data = prepare_data(config)  # the cache is an optimisation: the run goes on
    assert not data.from_cache and data.splits["train"].num_rows == 30
    assert list((tmp_path / "cache").iterdir()) == []  # no partial cache, no temp directory
    monkeypatch.setattr(np, "save", real_save)
    assert not prepare_data(config).from_cache
    assert prepare_data(config).from_cache


def test_cache_without_meta_json_is_rebuilt(tmp_path: Path) -> None:
    # An interrupted write leaves no meta.json: that directory must not count as a cache hit.
    files = _split_files(tmp_path)
    config = _config(tmp_path, files["train"], valid=files["valid"], test=files["test"])
    first = prepare_data(config)
    (tmp_path / "cache" / cache_key(config) / "meta.json").unlink()
    again = prepare_data(config)
    assert not again.from_cache
    _assert_same_data(first, again)
    assert prepare_data(config).from_cache


def test_cache_false_neither_reads_nor_writes(tmp_path: Path) -> None:
    files = _split_files(tmp_path)
    config = _config(tmp_path, files["train"], valid=files["valid"], test=files["test"])
    assert not prepare_data(config, cache=False).from_cache
    assert not (tmp_path / "cache").exists()
    prepare_data(config)
    assert not prepare_data(config, cache=False).from_cache


def test_rewritten_data_file_misses_the_cache(tmp_path: Path) -> None:
    files = _split_files(tmp_path)
    config = _config(tmp_path, files["train"], valid=files["valid"], test=files["test"])
    before = prepare_data(config)
    _write_csv(files["train"], 40, seed=7)  # other content, other size
    after = prepare_data(config)
    assert not after.from_cache
    assert after.splits["train"].num_rows == 40 != before.splits["train"].num_rows
    assert prepare_data(config).from_cache


def test_same_size_rewrite_with_new_mtime_misses_the_cache(tmp_path: Path) -> None:
    files = _split_files(tmp_path)
    config = _config(tmp_path, files["train"], valid=files["valid"], test=files["test"])
    prepare_data(config)
    stat = files["valid"].stat()
    header, body = files["valid"].read_text().split("\n", 1)
    files["valid"].write_text(header + "\n" + body.replace(",u", ",v"))  # users unseen in train
    os.utime(files["valid"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert files["valid"].stat().st_size == stat.st_size
    data = prepare_data(config)
    assert not data.from_cache
    assert set(data.splits["valid"].features.categorical[:, 0].tolist()) == {1}  # all OOV


@pytest.mark.parametrize(
    "change",
    [
        {"features": [{"name": "user", "type": "categorical", "min_count": 2}]},
        {"features": [{"name": "user", "type": "categorical", "hash_buckets": 8}]},
        {"split": {"seed": 1}},
    ],
    ids=["min_count", "hash_buckets", "split_seed"],
)
def test_changed_data_config_misses_the_cache(tmp_path: Path, change: dict[str, Any]) -> None:
    train = _write_csv(tmp_path / "train.csv", 60)
    base = _config(tmp_path, train, features=[{"name": "user", "type": "categorical"}])
    prepare_data(base)
    changed = DataConfig.model_validate({**base.model_dump(), **change})
    assert cache_key(changed) != cache_key(base)
    assert not prepare_data(changed).from_cache
    assert prepare_data(changed).from_cache and prepare_data(base).from_cache


def test_changed_cache_dir_alone_keeps_the_key(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 60)
    config = _config(tmp_path, train)
    moved = config.model_copy(update={"cache_dir": tmp_path / "elsewhere"})
    assert cache_key(moved) == cache_key(config)


def test_min_count_change_changes_the_encoding(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 60)
    features = [{"name": "user", "type": "categorical", "min_count": 1000}]
    rare = prepare_data(_config(tmp_path, train, features=features))
    common = prepare_data(
        _config(tmp_path, train, features=[{"name": "user", "type": "categorical"}])
    )
    assert not rare.from_cache and not common.from_cache
    assert set(rare.splits["train"].features.categorical[:, 0].tolist()) == {1}  # all OOV
    assert len(set(common.splits["train"].features.categorical[:, 0].tolist())) > 1


def test_cache_dir_from_environment_when_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "env_cache"
    monkeypatch.setenv("FINALMLP_CACHE_DIR", str(env_dir))
    train = _write_csv(tmp_path / "train.csv", 60)
    config = _config(tmp_path, train, cache_dir=None)
    assert not prepare_data(config).from_cache
    assert (env_dir / cache_key(config) / "meta.json").is_file()
    assert prepare_data(config).from_cache
    assert not (tmp_path / "cache").exists()


def test_explicit_cache_dir_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINALMLP_CACHE_DIR", str(tmp_path / "env_cache"))
    train = _write_csv(tmp_path / "train.csv", 60)
    config = _config(tmp_path, train)
    prepare_data(config)
    assert (tmp_path / "cache" / cache_key(config) / "meta.json").is_file()
    assert not (tmp_path / "env_cache").exists()


# ----------------------------------------------------------------------------- random split
def test_random_split_is_disjoint_complete_and_sized(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 200)
    config = _config(tmp_path, train, split={"valid_fraction": 0.15, "test_fraction": 0.25})
    data = prepare_data(config, cache=False)
    ids = {name: _row_ids(data, name) for name in SPLITS}
    assert {name: len(v) for name, v in ids.items()} == {"train": 120, "valid": 30, "test": 50}
    everything = np.concatenate(list(ids.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(200))  # disjoint and complete
    for name in SPLITS:
        assert np.all(np.diff(ids[name]) > 0), f"{name} rows are not in file order"
    # Labels travel with their rows.
    labels = np.loadtxt(train, delimiter=",", skiprows=1, usecols=0)
    for name in SPLITS:
        np.testing.assert_array_equal(data.splits[name].label, labels[ids[name]][:, None])


def test_random_split_is_deterministic_by_seed(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 100)

    def valid_rows(seed: int) -> list[int]:
        config = _config(tmp_path, train, split={"seed": seed})
        return _row_ids(prepare_data(config, cache=False), "valid").tolist()

    assert valid_rows(3) == valid_rows(3)
    assert valid_rows(3) != valid_rows(4)
    assert len(valid_rows(3)) == 10  # default fractions 0.1 / 0.1


def test_only_missing_splits_are_cut_from_train(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 100)
    valid = _write_csv(tmp_path / "valid.csv", 17, seed=5)
    config = _config(tmp_path, train, valid=valid, split={"test_fraction": 0.2})
    frames = load_frames(config)
    assert {k: v.height for k, v in frames.items()} == {"train": 80, "valid": 17, "test": 20}
    assert set(frames["train"]["rowid"]).isdisjoint(set(frames["test"]["rowid"]))


@pytest.mark.parametrize("fractions", [(0.0, 0.1), (0.1, 0.001)])
def test_fraction_leaving_no_rows_is_data_error(
    tmp_path: Path, fractions: tuple[float, float]
) -> None:
    train = _write_csv(tmp_path / "train.csv", 20)
    split = {"valid_fraction": fractions[0], "test_fraction": fractions[1]}
    empty = "valid" if fractions[0] == 0.0 else "test"
    with pytest.raises(
        DataError, match=rf"{empty}_fraction=.* leaves no {empty} rows out of 20; give a {empty}"
    ):
        prepare_data(_config(tmp_path, train, split=split))
    assert not (tmp_path / "cache").exists()


def test_fractions_leaving_no_train_rows_is_data_error(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 10)
    split = {"valid_fraction": 0.6, "test_fraction": 0.4}
    with pytest.raises(DataError, match="0 rows of training data"):
        prepare_data(_config(tmp_path, train, split=split))


# ----------------------------------------------------------------------------- group
def test_group_column_is_encoded_and_cached(tmp_path: Path) -> None:
    files = _split_files(tmp_path)
    config = _config(
        tmp_path, files["train"], valid=files["valid"], test=files["test"], group="user"
    )
    first = prepare_data(config)
    second = prepare_data(config)
    assert second.from_cache
    _assert_same_data(first, second)
    users = np.loadtxt(files["valid"], delimiter=",", skiprows=1, usecols=1, dtype=str)
    group = second.splits["valid"].group
    assert group is not None and group.dtype == np.int64 and group.shape == (30,)
    # Same user <-> same group id.
    for i in range(len(users)):
        np.testing.assert_array_equal(group == group[i], users == users[i])


def test_group_not_a_feature_is_still_read(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 60)
    config = _config(tmp_path, train, group="user", features=[{"name": "price", "type": "numeric"}])
    data = prepare_data(config, cache=False)
    for name in SPLITS:
        group = data.splits[name].group
        assert group is not None and len(group) == data.splits[name].num_rows
        assert 1 < len(set(group.tolist())) <= 5


def test_no_group_configured_means_no_group(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", 60)
    data = prepare_data(_config(tmp_path, train))
    assert all(data.splits[name].group is None for name in SPLITS)


def test_missing_group_values_form_one_group(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    rows = ["a", "", "b", "", "a", "c"] * 5
    train.write_text("label,user\n" + "".join(f"{i % 2},{u}\n" for i, u in enumerate(rows)))
    config = _config(
        tmp_path, train, group="user", features=[{"name": "user", "type": "categorical"}]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN -> int cast behind the scenes
        data = prepare_data(config, cache=False)
    frames = load_frames(config)
    for name in SPLITS:
        group = data.splits[name].group
        users = frames[name]["user"].fill_null("").to_numpy()
        assert group is not None and group.min() >= 1
        for i in range(len(users)):
            np.testing.assert_array_equal(group == group[i], users == users[i])


def test_sequence_features_survive_the_cache(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    lines = [f"{i % 2},u{i % 3},a^b{i % 4},x|y{i % 5}|z" for i in range(40)]
    train.write_text("label,user,tags,genres\n" + "\n".join(lines) + "\n")
    features = [
        {"name": "user", "type": "categorical"},
        {"name": "tags", "type": "sequence", "max_len": 3},
        {"name": "genres", "type": "sequence", "separator": "|", "max_len": 2},
    ]
    config = _config(tmp_path, train, features=features)
    first = prepare_data(config)
    second = prepare_data(config)
    assert second.from_cache
    assert [s.shape for s in second.splits["train"].features.sequences] == [(32, 3), (32, 2)]
    for name in SPLITS:
        for a, b in zip(
            first.splits[name].features.sequences,
            second.splits[name].features.sequences,
            strict=True,
        ):
            assert a.dtype == b.dtype == np.int32
            np.testing.assert_array_equal(a, b)
