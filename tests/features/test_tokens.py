"""Tokens do not depend on the file format: dtype normalisation, blanks, non-finite numbers,
Parquet list columns for sequences, and the log_square missing bucket."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finalmlp.errors import DataError, SchemaError
from finalmlp.features.processor import FeatureProcessor, normalize_tokens
from finalmlp.features.tables import FIRST_ID, OOV_ID
from finalmlp.schema import CategoricalFeature, NumericFeature, SequenceFeature


def _ids(proc: FeatureProcessor, column: pl.Series) -> list[int]:
    return proc.transform(column.to_frame()).categorical[:, 0].tolist()


# ----------------------------------------------------------------------------- categorical
def test_csv_text_parquet_int_and_float_give_the_same_ids() -> None:
    proc = FeatureProcessor([CategoricalFeature(name="site")])
    proc.fit(pl.DataFrame({"site": ["1005", "1002", "1005", "7"]}))
    text = _ids(proc, pl.Series("site", ["1005", "1002", "7"]))
    as_int = _ids(proc, pl.Series("site", [1005, 1002, 7], dtype=pl.Int64))
    as_float = _ids(proc, pl.Series("site", [1005.0, 1002.0, 7.0], dtype=pl.Float64))
    assert text == as_int == as_float
    assert OOV_ID not in text


def test_floats_that_are_not_whole_keep_their_text() -> None:
    tokens = normalize_tokens(pl.Series("x", [1005.0, 1.5, -0.0, 2.25, None]), "x")
    assert tokens.to_list() == ["1005", "1.5", "0", "2.25", None]
    assert normalize_tokens(pl.Series("x", [float("nan")]), "x").to_list() == [None]


def test_booleans_and_their_text_spellings_are_one_token() -> None:
    proc = FeatureProcessor([CategoricalFeature(name="flag")])
    proc.fit(pl.DataFrame({"flag": pl.Series([True, False, True], dtype=pl.Boolean)}))
    assert proc.tables_["flag"].values == ["true", "false"]
    text = _ids(proc, pl.Series("flag", ["true", "False", " TRUE ", "false"]))
    assert text == [FIRST_ID, FIRST_ID + 1, FIRST_ID, FIRST_ID + 1]


def test_categorical_text_is_stripped_and_blanks_get_the_fill_value() -> None:
    feat = CategoricalFeature(name="city", fill_value="<na>")
    train = pl.DataFrame({"city": [" paris", "paris ", "", "  ", None]})
    proc = FeatureProcessor([feat]).fit(train)
    assert proc.tables_["city"].values == ["<na>", "paris"]  # 3 missing, 2 paris
    assert _ids(proc, pl.Series("city", ["paris", "\tparis\t", " ", None])) == [3, 3, 2, 2]


def test_nested_categorical_column_is_schema_error() -> None:
    proc = FeatureProcessor([CategoricalFeature(name="tags")])
    frame = pl.DataFrame({"tags": [["a", "b"], ["c"]]})
    with pytest.raises(SchemaError, match=r"column 'tags' of feature 'tags' has dtype List.*"):
        proc.fit(frame)


def test_hashed_ids_do_not_depend_on_dtype() -> None:
    proc = FeatureProcessor([CategoricalFeature(name="c", hash_buckets=1000)])
    proc.fit(pl.DataFrame({"c": ["1", "2"]}))
    assert _ids(proc, pl.Series("c", [17.0, 3.0])) == _ids(proc, pl.Series("c", ["17", " 3"]))


# ----------------------------------------------------------------------------- numeric
@pytest.mark.parametrize("transform", ["none", "standard", "minmax", "log"])
def test_inf_and_nan_text_become_the_fill_value(transform: str) -> None:
    feat = NumericFeature(name="x", fill_value=0.5, transform=transform)
    train = pl.DataFrame({"x": ["1", "inf", "2", "-inf", "NaN", "3"]})
    proc = FeatureProcessor([feat]).fit(train)
    clean = FeatureProcessor([feat]).fit(pl.DataFrame({"x": [1.0, None, 2.0, None, None, 3.0]}))
    assert proc.numeric_stats_ == clean.numeric_stats_
    test = pl.DataFrame({"x": ["inf", "-Infinity", "nan", "2"]})
    got = proc.transform(test).numeric[:, 0]
    assert np.isfinite(got).all()
    expected = clean.transform(pl.DataFrame({"x": [None, None, None, 2.0]})).numeric[:, 0]
    np.testing.assert_array_equal(got, expected)
    floats = pl.DataFrame({"x": [math.inf, -math.inf, 2.0]})
    assert np.isfinite(proc.transform(floats).numeric).all()


def test_inf_in_quantile_and_log_square_buckets_is_missing() -> None:
    features = [
        NumericFeature(name="q", bucketize="quantile", num_buckets=4, fill_value=0.0),
        NumericFeature(name="ls", source="q", bucketize="log_square"),
    ]
    train = pl.DataFrame({"q": [1.0, 2.0, 3.0, 4.0, math.inf]})
    proc = FeatureProcessor(features).fit(train)
    assert all(math.isfinite(e) for e in proc.bucket_edges_["q"])
    assert "null" in proc.tables_["ls"].values  # inf is missing, not a huge bucket


# ----------------------------------------------------------------------------- log_square
def test_log_square_missing_is_its_own_bucket_not_minus_one() -> None:
    feat = NumericFeature(name="i1", bucketize="log_square", fill_value=-1.0)
    proc = FeatureProcessor([feat]).fit(pl.DataFrame({"i1": [-1.0, None, -1.0, None, 5.0]}))
    ids = _ids(proc, pl.Series("i1", ["-1", None, "", "inf"]))
    assert ids[0] != ids[1] and ids[1] == ids[2] == ids[3]
    assert set(proc.tables_["i1"].values) == {"-1", "null", "2"}


# ----------------------------------------------------------------------------- sequences
def _sequence_proc(**options: object) -> FeatureProcessor:
    feat = SequenceFeature.model_validate({"name": "s", "max_len": 3, **options})
    return FeatureProcessor([feat]).fit(pl.DataFrame({"s": ["10^20", "30", "10^1.5"]}))


@pytest.mark.parametrize(
    "column",
    [
        pl.Series("s", [["10", " 20 "], ["30"], None, []], dtype=pl.List(pl.Utf8)),
        pl.Series("s", [[10, 20], [30], None, []], dtype=pl.List(pl.Int64)),
        pl.Series("s", [[10.0, 20.0], [30.0], None, []], dtype=pl.List(pl.Float64)),
        pl.Series("s", ["10^20", "30", None, ""]),
    ],
    ids=["list_str", "list_int", "list_float", "text"],
)
def test_list_columns_encode_like_text_sequences(column: pl.Series) -> None:
    proc = _sequence_proc()
    (seq,) = proc.transform(column.to_frame()).sequences
    assert seq.tolist() == [[2, 4, 0], [5, 0, 0], [0, 0, 0], [0, 0, 0]]  # 10, 1.5, 20, 30


def test_list_items_are_normalized_and_blank_items_dropped() -> None:
    proc = _sequence_proc()
    column = pl.Series("s", [[1.5, None, 10.0], [None]], dtype=pl.List(pl.Float64))
    (seq,) = proc.transform(column.to_frame()).sequences
    assert seq.tolist() == [[3, 2, 0], [0, 0, 0]]  # "1.5" (not "1.5.0"), "10" (not "10.0")


def test_parquet_list_column_fits_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "seq.parquet"
    pl.DataFrame({"s": [["a", "b"], ["b"], []]}).write_parquet(path)
    frame = pl.read_parquet(path)
    proc = FeatureProcessor([SequenceFeature(name="s", max_len=2)]).fit(frame)
    assert proc.tables_["s"].values == ["b", "a"]
    (seq,) = proc.transform(pl.DataFrame({"s": ["a^b", "b", ""]})).sequences
    np.testing.assert_array_equal(seq, proc.transform(frame).sequences[0])


def test_nested_list_sequence_column_is_schema_error() -> None:
    frame = pl.DataFrame({"s": [[["a"]], [["b", "c"]]]})
    with pytest.raises(
        SchemaError, match=r"column 's' of sequence feature 's' has dtype List\(List.*Flatten"
    ):
        FeatureProcessor([SequenceFeature(name="s")]).fit(frame)


def test_state_saved_under_the_old_token_rules_is_refused(tmp_path: Path) -> None:
    # Version 1 encoded 1005.0 as "1005.0" and a missing log_square value as "-1": a run saved
    # then would be scored with other ids than it was trained on.
    proc = FeatureProcessor([CategoricalFeature(name="x")]).fit(pl.DataFrame({"x": ["a"]}))
    path = tmp_path / "processor.json"
    path.write_text(json.dumps(proc.to_dict() | {"version": 1}), encoding="utf-8")
    with pytest.raises(DataError, match=r"version 1 is not supported .*re-run training"):
        FeatureProcessor.load(path)
