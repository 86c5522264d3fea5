"""The history builder: no leakage, most recent last, truncation, split visibility, compact
storage, bad input, and the data pipeline (cache included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from finalmlp.data.dataset import prepare_data
from finalmlp.errors import DataError, SchemaError
from finalmlp.features.history import build_histories
from finalmlp.features.history_column import HistoryColumn
from finalmlp.features.processor import FeatureProcessor
from finalmlp.schema import DataConfig, HistoryOptions


def _log(num_rows: int, seed: int) -> pl.DataFrame:
    """A random event log with many same-time ties: user, time, item, cat, rating, label."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "user": [f"u{u}" for u in rng.integers(0, 6, num_rows)],
            "time": rng.integers(0, 15, num_rows).astype(str),
            "item": [f"i{i}" for i in rng.integers(0, 30, num_rows)],
            "cat": [f"c{i}" for i in rng.integers(0, 4, num_rows)],
            "rating": rng.integers(1, 6, num_rows).astype(str),
            "label": rng.integers(0, 2, num_rows),
        }
    )


def _expected(frames: dict[str, pl.DataFrame], split: str, max_len: int) -> list[list[str]]:
    """Brute force: per row, the visible behaviour events (rating >= 4) of its user strictly
    before its time, ordered by (time, split order, file order), the last max_len items."""
    order = ["train", "valid", "test"]
    visible = order[: order.index(split) + 1]
    events = [
        (int(r["time"]), rank, i, r["user"], r["item"])
        for rank, name in enumerate(visible)
        for i, r in enumerate(frames[name].iter_rows(named=True))
        if int(r["rating"]) >= 4
    ]
    events.sort()
    out = []
    for row in frames[split].iter_rows(named=True):
        items = [e[4] for e in events if e[3] == row["user"] and e[0] < int(row["time"])]
        out.append(items[-max_len:])
    return out


def _options(max_len: int = 3) -> HistoryOptions:
    return HistoryOptions.model_validate(
        {"user": "user", "time": "time", "max_len": max_len,
         "behaviour": {"column": "rating", "op": ">=", "value": 4}}
    )  # fmt: skip


def _decoded(histories: Any, split: str, column: str) -> list[list[str]]:
    h = histories[split]
    values = h.events[column].to_list()
    return [values[int(e) - int(n) : int(e)] for e, n in zip(h.ends, h.lengths, strict=True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histories_match_brute_force_without_leakage(seed: int) -> None:
    log = _log(240, seed)
    frames = {"train": log[:120], "valid": log[120:180], "test": log[180:]}
    histories = build_histories(frames, _options(max_len=3), ["item", "time"])
    for split in frames:
        assert _decoded(histories, split, "item") == _expected(frames, split, 3)
        # a row's history never holds its own event or a later one
        row_times = frames[split]["time"].cast(pl.Int64).to_list()
        for row_time, times in zip(row_times, _decoded(histories, split, "time"), strict=True):
            assert all(int(t) < row_time for t in times)
        assert any(_decoded(histories, split, "item")[1:])  # not trivially empty


def test_train_rows_never_see_later_splits() -> None:
    """A valid event earlier in time than a train row is still not in its history."""
    frames = {
        "train": pl.DataFrame({"user": ["a"], "time": ["10"], "item": ["late"], "rating": ["5"]}),
        "valid": pl.DataFrame({"user": ["a"], "time": ["1"], "item": ["v"], "rating": ["5"]}),
        "test": pl.DataFrame({"user": ["a"], "time": ["20"], "item": ["t"], "rating": ["5"]}),
    }
    histories = build_histories(frames, _options(), ["item"])
    assert _decoded(histories, "train", "item") == [[]]
    assert _decoded(histories, "valid", "item") == [[]]  # train's event is later
    assert _decoded(histories, "test", "item") == [["v", "late"]]  # most recent last


def test_ties_are_not_before_and_side_fields_are_parallel() -> None:
    frame = pl.DataFrame(
        {"user": ["a"] * 4, "time": [1, 2, 2, 3], "item": ["x", "y", "z", "w"],
         "cat": ["cx", "cy", "cz", "cw"], "rating": [5] * 4}
    )  # fmt: skip
    h = build_histories({"train": frame}, _options(max_len=5), ["item", "cat"])
    assert _decoded(h, "train", "item") == [[], ["x"], ["x"], ["x", "y", "z"]]
    assert _decoded(h, "train", "cat") == [[], ["cx"], ["cx"], ["cx", "cy", "cz"]]


def test_unsorted_rows_give_the_same_histories() -> None:
    """Rows need not be in time order (events at the same time keep their file order, so
    this log has distinct times)."""
    log = _log(150, 5).with_columns(time=pl.Series(np.random.default_rng(0).permutation(150)))
    shuffled = log.sample(fraction=1.0, shuffle=True, seed=3)
    a = build_histories({"train": log}, _options(), ["item"])
    b = build_histories({"train": shuffled}, _options(), ["item"])
    key = {row: hist for row, hist in zip(log.rows(), _decoded(a, "train", "item"), strict=True)}
    assert all(
        key[row] == hist
        for row, hist in zip(shuffled.rows(), _decoded(b, "train", "item"), strict=True)
    )


def test_bad_input_is_one_clear_error() -> None:
    frame = pl.DataFrame({"user": ["a", "b"], "time": ["1", "yesterday"], "item": ["x", "y"],
                          "rating": ["5", "5"]})  # fmt: skip
    with pytest.raises(DataError, match=r"time column 'time'.*'yesterday' on row 2 of the train"):
        build_histories({"train": frame}, _options(), ["item"])
    frame = frame.with_columns(time=pl.Series(["1", "2"]), user=pl.Series(["a", None]))
    with pytest.raises(DataError, match=r"user key 'user'.*missing on row 2 of the train"):
        build_histories({"train": frame}, _options(), ["item"])
    with pytest.raises(SchemaError, match=r"\['genre'\] needed by data.history"):
        build_histories({"train": frame}, _options(), ["genre"])
    bad = frame.with_columns(user=pl.Series(["a", "b"]), rating=pl.Series(["5", "great"]))
    with pytest.raises(DataError, match=r"behaviour column 'rating' must be numeric.*'great'"):
        build_histories({"train": bad}, _options(), ["item"])


def test_history_column_is_compact_and_pads_like_a_sequence() -> None:
    column = HistoryColumn(
        np.array([5, 6, 7, 8], np.int32), np.array([0, 2, 4]), np.array([0, 2, 3]), 4
    )
    assert column.shape == (3, 4)
    np.testing.assert_array_equal(column[:], [[0, 0, 0, 0], [5, 6, 0, 0], [6, 7, 8, 0]])
    np.testing.assert_array_equal(column[np.array([2, 0])], [[6, 7, 8, 0], [0, 0, 0, 0]])
    assert column.nbytes == 4 * 4 + 12 * 3
    with pytest.raises(ValueError, match="outside the events"):
        HistoryColumn(np.array([1], np.int32), np.array([2]), np.array([1]), 4)


def _write_log(path: Path, log: pl.DataFrame) -> Path:
    log.write_csv(path)
    return path


def _history_config(tmp_path: Path, **overrides: Any) -> DataConfig:
    log = _log(300, 7)
    raw: dict[str, Any] = {
        "train": _write_log(tmp_path / "train.csv", log[:200]),
        "valid": _write_log(tmp_path / "valid.csv", log[200:250]),
        "test": _write_log(tmp_path / "test.csv", log[250:]),
        "features": [
            {"name": "item", "type": "categorical"},
            {"name": "cat", "type": "categorical"},
            {"name": "hist_item", "type": "sequence", "history": "item", "share_embedding": "item"},
            {"name": "hist_cat", "type": "sequence", "history": "cat", "share_embedding": "cat"},
        ],
        "history": {"user": "user", "time": "time", "max_len": 4,
                    "behaviour": {"column": "rating", "op": ">=", "value": 4}},
        "cache_dir": tmp_path / "cache",
    }  # fmt: skip
    return DataConfig.model_validate({**raw, **overrides})


def test_prepare_data_builds_encodes_and_caches_histories(tmp_path: Path) -> None:
    config = _history_config(tmp_path)
    assert [f.max_len for f in config.features[2:]] == [4, 4]  # from data.history
    first = prepare_data(config)
    second = prepare_data(config)
    assert not first.from_cache and second.from_cache
    proc = first.processor
    items = proc.tables_["item"]
    for name in ("train", "valid", "test"):
        seq = first.splits[name].features.sequences[0]
        assert isinstance(seq, HistoryColumn) and seq.shape[1] == 4
        cached = second.splits[name].features.sequences[0]
        np.testing.assert_array_equal(seq[:], cached[:])
        # the encoded ids are those of the brute-force histories' items
        frames = {
            s: pl.read_csv(tmp_path / f"{s}.csv", infer_schema=False)
            for s in ("train", "valid", "test")
        }
        expected = _expected(frames, name, 4)
        for row in (0, len(expected) // 2, len(expected) - 1):
            ids = items.encode(pl.Series(expected[row], dtype=pl.Utf8)).tolist()
            assert seq[row][: len(ids)].tolist() == ids and not seq[row][len(ids) :].any()


def test_scoring_reads_a_history_from_its_own_column(tmp_path: Path) -> None:
    """Without built histories the feature reads lists or separator text, keeping the most
    recent max_len items; unknown items are OOV (1), an empty history all padding."""
    config = _history_config(tmp_path)
    proc = prepare_data(config, cache=False).processor
    frame = pl.DataFrame(
        {"item": ["i1", "i2", "i3"], "cat": ["c1", "c1", "c2"],
         "hist_item": [["i1", "i2", "nope", "i3", "i4"], [], None],
         "hist_cat": ["c1^c2", "", "c9"]}
    )  # fmt: skip
    encoded = proc.transform(frame)
    items = proc.tables_["item"]
    recent = items.encode(pl.Series(["i2", "nope", "i3", "i4"])).tolist()
    assert encoded.sequences[0][0].tolist() == recent and 1 in recent
    assert not encoded.sequences[0][1].any() and not encoded.sequences[0][2].any()


def test_history_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"needs data\.history"):
        _history_config(tmp_path, history=None)
    features = [
        {"name": "item", "type": "categorical"},
        {"name": "hist_item", "type": "sequence", "history": "item", "max_len": 9},
    ]
    with pytest.raises(ValidationError, match=r"sets max_len 9; its length is data\.history"):
        _history_config(tmp_path, features=features)
    with pytest.raises(ValidationError, match="no sequence feature sets history"):
        _history_config(tmp_path, features=[{"name": "item", "type": "categorical"}])


def test_processor_fit_counts_train_events_for_an_own_table() -> None:
    frame = pl.DataFrame({"user": ["a", "a", "b"], "time": [1, 2, 3], "item": ["x", "y", "x"]})
    options = HistoryOptions(user="user", time="time", max_len=2)
    histories = build_histories({"train": frame}, options, ["item"])
    from finalmlp.schema import SequenceFeature

    proc = FeatureProcessor([SequenceFeature(name="h", history="item", max_len=2, truncate="tail")])
    encoded = proc.fit_transform(frame, histories["train"])
    assert proc.tables_["h"].size == 4  # pad, OOV, x, y
    assert [int((r > 0).sum()) for r in encoded.sequences[0][:]] == [0, 1, 0]


def test_time_split_puts_the_latest_rows_in_test(tmp_path: Path) -> None:
    log = _log(300, 9).with_columns(time=pl.Series(np.arange(300)[::-1].astype(str)))
    path = _write_log(tmp_path / "log.csv", log)
    config = _history_config(
        tmp_path, train=path, valid=None, test=None,
        split={"valid_fraction": 0.1, "test_fraction": 0.2, "by": "time"},
    )  # fmt: skip
    from finalmlp.data.frames import load_frames

    frames = load_frames(config)
    times = {s: frames[s]["time"].cast(pl.Int64) for s in frames}
    assert [frames[s].height for s in ("train", "valid", "test")] == [210, 30, 60]
    assert times["train"].max() < times["valid"].min() <= times["valid"].max() < times["test"].min()
    assert prepare_data(config, cache=False).splits["test"].num_rows == 60
