"""FeatureProcessor: vocabularies, OOV, hashing, numeric transforms, sequences, state, layout."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finalmlp.errors import DataError, NotFittedError, SchemaError
from finalmlp.features.processor import EncodedFeatures, FeatureProcessor
from finalmlp.features.tables import FIRST_ID, OOV_ID, PAD_ID, stable_hash
from finalmlp.schema import CategoricalFeature, NumericFeature, SequenceFeature


def _assert_ids_in_range(proc: FeatureProcessor, encoded: EncodedFeatures) -> None:
    """Every id indexes a row of its field's table: 0 <= id < table size."""
    layout = proc.layout
    for j, table in enumerate(layout.categorical_tables):
        column = encoded.categorical[:, j]
        assert column.min(initial=0) >= 0
        assert column.max(initial=0) < layout.table_sizes[table], layout.categorical_fields[j]
    for seq, table in zip(encoded.sequences, layout.sequence_tables, strict=True):
        assert seq.min(initial=0) >= 0
        assert seq.max(initial=0) < layout.table_sizes[table]


def _decode(proc: FeatureProcessor, table: str, ids: np.ndarray) -> list[str | None]:
    """Vocabulary value of each id (None for padding, '<oov>' for OOV)."""
    values = proc.tables_[table].values
    out: list[str | None] = []
    for i in ids.tolist():
        out.append(None if i == PAD_ID else "<oov>" if i == OOV_ID else values[i - FIRST_ID])
    return out


def _assert_same(a: EncodedFeatures, b: EncodedFeatures) -> None:
    np.testing.assert_array_equal(a.categorical, b.categorical)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    assert len(a.sequences) == len(b.sequences)
    for x, y in zip(a.sequences, b.sequences, strict=True):
        np.testing.assert_array_equal(x, y)


# ----------------------------------------------------------------------------- vocabularies
def test_vocabulary_by_frequency_with_min_count_and_unseen_to_oov() -> None:
    train = pl.DataFrame({"city": ["b", "a", "a", "c", "b", "a", "rare", None, None]})
    proc = FeatureProcessor([CategoricalFeature(name="city", min_count=2)]).fit(train)
    # most frequent first, ties by value; "rare" (1x) and "c" (1x) fall below min_count
    assert proc.tables_["city"].values == ["a", "", "b"]  # null -> fill_value "" (2x)
    assert proc.layout.table_sizes == (FIRST_ID + 3,)
    test = pl.DataFrame({"city": ["a", "b", "rare", "c", "never seen", None]})
    ids = proc.transform(test).categorical[:, 0]
    assert ids.dtype == np.int32
    assert ids.tolist() == [2, 4, OOV_ID, OOV_ID, OOV_ID, 3]


def test_min_count_one_keeps_every_train_value() -> None:
    train = pl.DataFrame({"x": ["p", "q", "r"]})
    proc = FeatureProcessor([CategoricalFeature(name="x")]).fit(train)
    ids = proc.transform(train).categorical[:, 0]
    assert sorted(ids.tolist()) == [2, 3, 4]
    assert OOV_ID not in ids


def test_all_values_rare_gives_empty_vocabulary_and_all_oov() -> None:
    train = pl.DataFrame({"x": ["p", "q", "r"]})
    proc = FeatureProcessor([CategoricalFeature(name="x", min_count=5)]).fit(train)
    assert proc.layout.table_sizes == (FIRST_ID,)
    assert proc.transform(train).categorical[:, 0].tolist() == [OOV_ID] * 3


def test_source_column_and_integer_column_are_read_as_strings() -> None:
    train = pl.DataFrame({"raw_id": [7, 7, 8]})
    proc = FeatureProcessor([CategoricalFeature(name="item", source="raw_id")]).fit(train)
    assert proc.tables_["item"].values == ["7", "8"]
    assert proc.columns == ["raw_id"]
    assert proc.transform(pl.DataFrame({"raw_id": ["8", "9"]})).categorical[:, 0].tolist() == [
        3,
        OOV_ID,
    ]


# ----------------------------------------------------------------------------- hashing
def test_hash_buckets_ids_in_range_and_match_stable_hash() -> None:
    values = [f"user_{i}" for i in range(500)] + [None]
    train = pl.DataFrame({"user": values})
    proc = FeatureProcessor([CategoricalFeature(name="user", hash_buckets=13)]).fit(train)
    assert proc.layout.table_sizes == (FIRST_ID + 13,)
    encoded = proc.transform(train)
    ids = encoded.categorical[:, 0]
    assert ids.min() >= FIRST_ID and ids.max() < FIRST_ID + 13
    expected = [stable_hash(v if v is not None else "", 13) for v in values]
    assert ids.tolist() == expected
    # unseen values hash too (no OOV for hashed features)
    unseen = proc.transform(pl.DataFrame({"user": ["never seen"]})).categorical[0, 0]
    assert unseen == stable_hash("never seen", 13)
    _assert_ids_in_range(proc, encoded)


def test_stable_hash_pinned_values() -> None:
    # A change of hash function silently re-maps every hashed id of saved models: pin it.
    assert stable_hash("finalmlp", 1_000_003) == 387850
    assert stable_hash("user_42", 10**12) == 582040991691
    assert stable_hash("", 97) == 82
    assert stable_hash("日本", 1000) == 162


_HASH_SCRIPT = """
import json, sys
import polars as pl
from finalmlp.features.processor import FeatureProcessor
from finalmlp.features.tables import stable_hash
from finalmlp.schema import CategoricalFeature
values = json.loads(sys.argv[1])
proc = FeatureProcessor([CategoricalFeature(name="v", hash_buckets=1000)])
ids = proc.fit(pl.DataFrame({"v": values})).transform(pl.DataFrame({"v": values}))
print(json.dumps([ids.categorical[:, 0].tolist(), [stable_hash(v, 1000) for v in values]]))
"""


def test_hashing_is_stable_across_processes() -> None:
    values = ["alpha", "beta", "gamma", "日本", "", "a,b", "x" * 300]
    proc = FeatureProcessor([CategoricalFeature(name="v", hash_buckets=1000)])
    frame = pl.DataFrame({"v": values})
    here = proc.fit(frame).transform(frame).categorical[:, 0].tolist()
    for hash_seed in ("0", "12345"):  # Python's own str hash() differs with PYTHONHASHSEED
        result = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT, json.dumps(values)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            timeout=120,
        )
        there_proc, there_hash = json.loads(result.stdout)
        assert there_proc == here
        assert there_hash == here


# ----------------------------------------------------------------------------- not fitted
@pytest.mark.parametrize("use", ["transform", "layout", "to_dict", "save"])
def test_use_before_fit_raises_not_fitted(use: str, tmp_path: Path) -> None:
    proc = FeatureProcessor([CategoricalFeature(name="x")])
    actions = {
        "transform": lambda: proc.transform(pl.DataFrame({"x": ["a"]})),
        "layout": lambda: proc.layout,
        "to_dict": proc.to_dict,
        "save": lambda: proc.save(tmp_path / "p.json"),
    }
    with pytest.raises(NotFittedError, match=r"not fitted yet; call fit\(train_df\) or load"):
        actions[use]()
    assert not (tmp_path / "p.json").exists()


def test_constructor_only_stores_features() -> None:
    feats = [CategoricalFeature(name="x")]
    proc = FeatureProcessor(feats)
    assert proc.features == feats
    assert not [k for k in vars(proc) if k.endswith("_")]


# ----------------------------------------------------------------------------- user errors
def test_missing_column_names_it_and_the_columns_present() -> None:
    proc = FeatureProcessor([CategoricalFeature(name="city")])
    with pytest.raises(SchemaError, match=r"\['city'\] not found in the training data.*'town'"):
        proc.fit(pl.DataFrame({"town": ["a"]}))
    proc.fit(pl.DataFrame({"city": ["a"]}))
    with pytest.raises(SchemaError, match=r"\['city'\] not found in the data"):
        proc.transform(pl.DataFrame({"town": ["a"]}))


def test_fit_on_zero_rows_is_a_data_error() -> None:
    proc = FeatureProcessor([CategoricalFeature(name="x")])
    with pytest.raises(DataError, match="0 rows"):
        proc.fit(pl.DataFrame({"x": pl.Series([], dtype=pl.Utf8)}))


def test_text_in_numeric_column_names_column_value_and_row() -> None:
    proc = FeatureProcessor([NumericFeature(name="price")])
    frame = pl.DataFrame({"price": ["1.5", " 2 ", "", "abc", "3"]})
    with pytest.raises(DataError, match=r"column 'price' must be numeric, got 'abc' on row 4"):
        proc.fit(frame)


def test_transform_of_zero_rows_gives_empty_arrays() -> None:
    features = [
        CategoricalFeature(name="c"),
        NumericFeature(name="n"),
        SequenceFeature(name="s", max_len=4),
    ]
    train = pl.DataFrame({"c": ["a"], "n": [1.0], "s": ["a^b"]})
    proc = FeatureProcessor(features).fit(train)
    encoded = proc.transform(train.head(0))
    assert encoded.categorical.shape == (0, 1)
    assert encoded.numeric.shape == (0, 1)
    assert encoded.sequences[0].shape == (0, 4)


# ----------------------------------------------------------------------------- numeric
_NUMERIC_TRAIN = [3.0, None, -2.0, float("nan"), 10.0, 0.5]
_NUMERIC_TEST = [4.0, None, float("nan"), -100.0, 0.0]


def _filled(values: list[float | None], fill: float) -> np.ndarray:
    return np.array([fill if v is None or math.isnan(v) else v for v in values])


@pytest.mark.parametrize("transform", ["none", "standard", "minmax", "log"])
def test_numeric_transforms_match_formula(transform: str) -> None:
    feat = NumericFeature(name="x", transform=transform, fill_value=1.25)
    train = pl.DataFrame({"x": _NUMERIC_TRAIN})
    test = pl.DataFrame({"x": _NUMERIC_TEST})
    proc = FeatureProcessor([feat]).fit(train)
    got = proc.transform(test).numeric[:, 0]
    assert got.dtype == np.float32
    fitted, x = _filled(_NUMERIC_TRAIN, 1.25), _filled(_NUMERIC_TEST, 1.25)
    expected = {
        "none": x,
        "standard": (x - fitted.mean()) / fitted.std(),
        "minmax": (x - fitted.min()) / (fitted.max() - fitted.min()),
        "log": np.sign(x) * np.log1p(np.abs(x)),
    }[transform]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert np.isfinite(got).all()


def test_constant_column_does_not_divide_by_zero() -> None:
    train = pl.DataFrame({"s": [2.0, 2.0], "m": [5.0, 5.0]})
    features = [
        NumericFeature(name="s", transform="standard"),
        NumericFeature(name="m", transform="minmax"),
    ]
    got = FeatureProcessor(features).fit(train).transform(pl.DataFrame({"s": [3.0], "m": [7.0]}))
    np.testing.assert_allclose(got.numeric, [[1.0, 2.0]])


def test_numeric_fill_value_for_null_nan_and_empty_text() -> None:
    proc = FeatureProcessor([NumericFeature(name="x", fill_value=-7.0)])
    proc.fit(pl.DataFrame({"x": [1.0]}))
    text = proc.transform(pl.DataFrame({"x": ["", None, "nan", " 2.5 "]})).numeric[:, 0]
    floats = proc.transform(pl.DataFrame({"x": [None, float("nan"), 2.5]})).numeric[:, 0]
    assert text.tolist() == [-7.0, -7.0, -7.0, 2.5]
    assert floats.tolist() == [-7.0, -7.0, 2.5]


def test_numeric_column_that_is_all_null_gets_fill_value() -> None:
    # One scored row without a numeric value arrives as a column of dtype Null.
    proc = FeatureProcessor([NumericFeature(name="x", fill_value=3.0, transform="none")])
    proc.fit(pl.DataFrame({"x": [1.0, 2.0]}))
    frame = pl.DataFrame({"x": [None]})
    assert frame["x"].dtype == pl.Null
    assert proc.transform(frame).numeric.tolist() == [[3.0]]


def test_quantile_buckets_match_edges_and_are_monotone() -> None:
    rng = np.random.default_rng(0)
    train_values = rng.lognormal(size=1000)
    feat = NumericFeature(name="q", bucketize="quantile", num_buckets=8)
    proc = FeatureProcessor([feat]).fit(pl.DataFrame({"q": train_values}))
    edges = np.unique(np.quantile(train_values, np.linspace(0, 1, 9)[1:-1]))
    np.testing.assert_allclose(proc.bucket_edges_["q"], edges)
    probe = np.sort(np.concatenate([rng.lognormal(size=300) * 3, [-1e9, 0.0, 1e9], edges]))
    encoded = proc.transform(pl.DataFrame({"q": probe}))
    ids = encoded.categorical[:, 0]
    np.testing.assert_array_equal(ids, FIRST_ID + np.searchsorted(edges, probe, side="right"))
    assert (np.diff(ids) >= 0).all()
    assert ids[0] == FIRST_ID and ids[-1] == FIRST_ID + len(edges)
    assert proc.layout.numeric_fields == ()  # bucketized numerics are categorical fields
    _assert_ids_in_range(proc, encoded)


def test_quantile_buckets_with_ties_stay_in_range() -> None:
    train = pl.DataFrame({"q": [1.0] * 50 + [2.0] * 3})
    proc = FeatureProcessor([NumericFeature(name="q", bucketize="quantile", num_buckets=10)])
    proc.fit(train)
    encoded = proc.transform(pl.DataFrame({"q": [0.0, 1.0, 1.5, 2.0, 99.0, None]}))
    _assert_ids_in_range(proc, encoded)


def test_log_square_follows_criteo_rule() -> None:
    values = [-1.0, 0.0, 1.0, 2.0, 2.5, 3.0, 10.0, 100.0, 1e6, None]
    feat = NumericFeature(name="i1", bucketize="log_square", fill_value=-1.0)
    proc = FeatureProcessor([feat]).fit(pl.DataFrame({"i1": values}))
    encoded = proc.transform(pl.DataFrame({"i1": values}))
    tokens = _decode(proc, "i1", encoded.categorical[:, 0])
    expected = []
    for v in values:
        if v is None:
            expected.append("null")  # missing is a category of its own, not fill_value -1
        else:
            expected.append(str(math.floor(math.log(v) ** 2) if v > 2 else int(v)))
    assert tokens == expected
    assert expected[4:9] == ["0", "1", "5", "21", "190"]
    _assert_ids_in_range(proc, encoded)


def test_log_square_min_count_sends_rare_buckets_to_oov() -> None:
    train = pl.DataFrame({"i": [1.0, 1.0, 5.0, 100.0, 100.0]})  # buckets 1, 1, 2, 21, 21
    feat = NumericFeature(name="i", bucketize="log_square", min_count=2)
    proc = FeatureProcessor([feat]).fit(train)
    ids = proc.transform(pl.DataFrame({"i": [1.0, 5.0, 100.0, 7.0]})).categorical[:, 0]
    assert _decode(proc, "i", ids) == ["1", "<oov>", "21", "<oov>"]


# ----------------------------------------------------------------------------- sequences
_SEQ_ROWS = ["a|b|c|d|e", "b", "", None, " c | | a "]


@pytest.mark.parametrize(
    ("truncate", "first_row"), [("head", ["a", "b", "c"]), ("tail", ["c", "d", "e"])]
)
def test_sequence_truncation_and_zero_padding(truncate: str, first_row: list[str]) -> None:
    feat = SequenceFeature(name="s", separator="|", max_len=3, truncate=truncate)
    proc = FeatureProcessor([feat]).fit(pl.DataFrame({"s": _SEQ_ROWS}))
    encoded = proc.transform(pl.DataFrame({"s": _SEQ_ROWS}))
    (seq,) = encoded.sequences
    assert seq.shape == (5, 3) and seq.dtype == np.int32
    rows = [_decode(proc, "s", row) for row in seq]
    assert rows[0] == first_row
    assert rows[1] == ["b", None, None]
    assert rows[2] == rows[3] == [None, None, None]  # empty and null: all padding
    assert rows[4] == ["c", "a", None]  # blanks around and between items are dropped
    assert encoded.categorical.shape == (5, 0)
    _assert_ids_in_range(proc, encoded)


def test_sequence_unseen_and_rare_items_are_oov_not_padding() -> None:
    feat = SequenceFeature(name="s", separator=",", max_len=4, min_count=2)
    proc = FeatureProcessor([feat]).fit(pl.DataFrame({"s": ["x,y", "x", "z"]}))
    (seq,) = proc.transform(pl.DataFrame({"s": ["x,new,z", "", "y"]})).sequences
    assert seq.tolist() == [[2, OOV_ID, OOV_ID, 0], [0, 0, 0, 0], [OOV_ID, 0, 0, 0]]


# ----------------------------------------------------------------------------- sharing
def test_shared_embedding_uses_owner_table_fitted_on_both_columns() -> None:
    features = [
        SequenceFeature(name="history", separator="^", max_len=3, share_embedding="item"),
        CategoricalFeature(name="item", min_count=2),
        CategoricalFeature(name="user"),
    ]
    train = pl.DataFrame(
        {
            "item": ["i1", "i2", "i3", "i1"],
            "history": ["i2^i4", "i4^i5", "", "i3"],
            "user": ["u1", "u2", "u1", "u2"],
        }
    )
    proc = FeatureProcessor(features).fit(train)
    layout = proc.layout
    assert len(layout.table_sizes) == 2  # item (shared) and user; no table for history
    item_table = layout.categorical_tables[layout.categorical_fields.index("item")]
    assert layout.sequence_tables == (item_table,)
    # min_count=2 counted over the union: i2, i3, i4 appear once per column
    assert set(proc.tables_["item"].values) == {"i1", "i2", "i3", "i4"}
    assert layout.table_sizes[item_table] == FIRST_ID + 4
    encoded = proc.transform(pl.DataFrame({"item": ["i4"], "history": ["i1^i5"], "user": ["u1"]}))
    item_id = encoded.categorical[0, layout.categorical_fields.index("item")]
    assert _decode(proc, "item", np.array([item_id])) == ["i4"]
    assert _decode(proc, "item", encoded.sequences[0][0]) == ["i1", "<oov>", None]


def test_shared_categorical_tables_give_equal_ids_for_equal_values() -> None:
    features = [
        CategoricalFeature(name="src"),
        CategoricalFeature(name="dst", share_embedding="src"),
    ]
    train = pl.DataFrame({"src": ["a", "b"], "dst": ["c", "a"]})
    proc = FeatureProcessor(features).fit(train)
    assert proc.layout.categorical_tables == (0, 0)
    encoded = proc.transform(pl.DataFrame({"src": ["c", "a"], "dst": ["c", "a"]}))
    np.testing.assert_array_equal(encoded.categorical[:, 0], encoded.categorical[:, 1])
    assert OOV_ID not in encoded.categorical


# ----------------------------------------------------------------------------- layout, state
_MIXED_FEATURES = [
    SequenceFeature(name="genres", separator="|", max_len=4),
    NumericFeature(name="price", transform="log"),
    CategoricalFeature(name="user", min_count=2),
    NumericFeature(name="age", bucketize="quantile", num_buckets=4),
    CategoricalFeature(name="device", hash_buckets=7),
    NumericFeature(name="clicks", bucketize="log_square"),
    NumericFeature(name="score", transform="standard", fill_value=0.5),
]


def _mixed_frame(rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    genres = ["|".join(rng.choice(list("ABCDEFG"), size=rng.integers(0, 7))) for _ in range(rows)]
    return pl.DataFrame(
        {
            "genres": genres,
            "price": rng.normal(size=rows) * 100,
            "user": [f"u{i}" for i in rng.integers(0, 30, size=rows)],
            "age": rng.integers(10, 80, size=rows).astype(float),
            "device": [f"d{i}" for i in rng.integers(0, 100, size=rows)],
            "clicks": rng.integers(0, 10_000, size=rows).astype(float),
            "score": np.where(rng.random(rows) < 0.1, np.nan, rng.random(rows)),
        }
    )


def test_layout_field_order_categorical_then_numeric_then_sequence() -> None:
    proc = FeatureProcessor(_MIXED_FEATURES).fit(_mixed_frame(200, seed=1))
    layout = proc.layout
    assert layout.categorical_fields == ("user", "age", "device", "clicks")
    assert layout.numeric_fields == ("price", "score")
    assert layout.sequence_fields == ("genres",)
    assert layout.field_names == ("user", "age", "device", "clicks", "price", "score", "genres")
    encoded = proc.transform(_mixed_frame(50, seed=2))
    assert encoded.categorical.shape == (50, 4)
    assert encoded.numeric.shape == (50, 2)
    assert [s.shape for s in encoded.sequences] == [(50, 4)]
    _assert_ids_in_range(proc, encoded)


def test_json_round_trip_gives_identical_arrays(tmp_path: Path) -> None:
    proc = FeatureProcessor(_MIXED_FEATURES).fit(_mixed_frame(300, seed=3))
    path = tmp_path / "processor.json"
    proc.save(path)
    loaded = FeatureProcessor.load(path)
    assert loaded.to_dict() == proc.to_dict()
    assert json.loads(path.read_text(encoding="utf-8")) == proc.to_dict()
    assert loaded.layout == proc.layout
    fresh = _mixed_frame(100, seed=4)
    _assert_same(loaded.transform(fresh), proc.transform(fresh))


def test_load_rejects_unknown_version_and_bad_json(tmp_path: Path) -> None:
    proc = FeatureProcessor([CategoricalFeature(name="x")]).fit(pl.DataFrame({"x": ["a"]}))
    state = proc.to_dict() | {"version": 999}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(DataError, match=r"version 999 is not supported.*re-run training"):
        FeatureProcessor.load(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"cannot read processor state .*p\.json"):
        FeatureProcessor.load(path)


def test_load_rejects_damaged_state(tmp_path: Path) -> None:
    proc = FeatureProcessor([CategoricalFeature(name="x")]).fit(pl.DataFrame({"x": ["a"]}))
    path = tmp_path / "p.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"version None is not supported.*re-run training"):
        FeatureProcessor.load(path)
    state = proc.to_dict()
    del state["tables"]
    path.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(DataError, match=r"processor state is damaged \(KeyError.*re-run training"):
        FeatureProcessor.load(path)


def test_fit_is_deterministic_under_row_order() -> None:
    frame = _mixed_frame(300, seed=5)
    shuffled = frame[np.random.default_rng(0).permutation(frame.height)]
    a = FeatureProcessor(_MIXED_FEATURES).fit(frame).to_dict()
    b = FeatureProcessor(_MIXED_FEATURES).fit(shuffled).to_dict()
    assert a["tables"] == b["tables"]
    assert a["bucket_edges"] == b["bucket_edges"]


# ----------------------------------------------------------------------------- randomized
def _reference_vocabulary(tokens: list[str], min_count: int) -> dict[str, int]:
    counts = Counter(tokens)
    kept = sorted((v for v, c in counts.items() if c >= min_count), key=lambda v: (-counts[v], v))
    return {v: FIRST_ID + i for i, v in enumerate(kept)}


def _random_strings(rng: np.random.Generator, pool: list[str], size: int) -> list[str | None]:
    picks = rng.zipf(1.5, size=size) % len(pool)
    return [None if rng.random() < 0.05 else pool[i] for i in picks]


@pytest.mark.parametrize("seed", range(5))
def test_random_tables_match_reference_encoding(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = list("abcxyzé日 ,|^")
    pool = ["".join(rng.choice(alphabet, size=rng.integers(1, 6))) for _ in range(60)]
    pool = sorted({p.strip(" ,|^") or "z" for p in pool})
    min_count = int(rng.integers(1, 4))
    max_len = int(rng.integers(1, 5))
    train_cat = _random_strings(rng, pool, 400)
    test_cat = _random_strings(rng, [*pool, "unseen", "also new"], 200)
    train_seq = [";".join(s or "" for s in _random_strings(rng, pool, 3)) for _ in range(400)]
    test_seq = [";".join(s or "" for s in _random_strings(rng, pool, 6)) for _ in range(200)]
    features = [
        CategoricalFeature(name="c", min_count=min_count, fill_value="<na>"),
        SequenceFeature(name="s", separator=";", max_len=max_len, min_count=min_count),
    ]
    proc = FeatureProcessor(features).fit(pl.DataFrame({"c": train_cat, "s": train_seq}))
    encoded = proc.transform(pl.DataFrame({"c": test_cat, "s": test_seq}))

    vocab = _reference_vocabulary([v if v is not None else "<na>" for v in train_cat], min_count)
    expected = [vocab.get(v if v is not None else "<na>", OOV_ID) for v in test_cat]
    assert encoded.categorical[:, 0].tolist() == expected

    def items(row: str) -> list[str]:
        return [t.strip() for t in row.split(";") if t.strip()][:max_len]

    seq_vocab = _reference_vocabulary([t for row in train_seq for t in items(row)], min_count)
    expected_seq = np.zeros((len(test_seq), max_len), dtype=np.int32)
    for r, row in enumerate(test_seq):
        for k, item in enumerate(items(row)):
            expected_seq[r, k] = seq_vocab.get(item, OOV_ID)
    np.testing.assert_array_equal(encoded.sequences[0], expected_seq)
    _assert_ids_in_range(proc, encoded)
