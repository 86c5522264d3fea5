"""read_file: CSV (with/without header), TSV, Parquet, libsvm; column selection, parsing, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import reader_config, write_file
from finalmlp.data.readers import read_file
from finalmlp.data.recipes import CRITEO_CATEGORICAL, CRITEO_NUMERIC, FRAPPE_FIELDS, apply_recipe
from finalmlp.errors import DataError, SchemaError
from finalmlp.features.processor import FeatureProcessor
from finalmlp.schema import DataConfig

# Frappe libFM index ranges per field (as in shared/data/frappe/SOURCE.md and test_libsvm.py).
FRAPPE_STARTS = [0, 957, 5039, 5046, 5053, 5055, 5058, 5060, 5069, 5149, 5382]


# ----------------------------------------------------------------------------- CSV / TSV
def test_csv_with_header_keeps_only_needed_columns_in_order(tmp_path: Path) -> None:
    path = write_file(tmp_path, "id,price,junk,user,label\n1,2.5,x,u1,1\n2,3,y,u2,0\n")
    frame = read_file(path, reader_config(path))
    assert frame.columns == ["label", "user", "price"]
    assert frame.schema == pl.Schema({"label": pl.Float64, "user": pl.String, "price": pl.Float64})
    assert frame["label"].to_list() == [1.0, 0.0]
    assert frame["user"].to_list() == ["u1", "u2"]
    assert frame["price"].to_list() == [2.5, 3.0]


def test_csv_categorical_ids_stay_text(tmp_path: Path) -> None:
    # Leading zeros matter for ids: "007" and "7" are different users.
    path = write_file(tmp_path, "label,user,price\n1,007,1\n0,7,2\n")
    assert read_file(path, reader_config(path))["user"].to_list() == ["007", "7"]


def test_csv_without_header_uses_config_columns(tmp_path: Path) -> None:
    path = write_file(tmp_path, "1,u1,9,2.0\n0,u2,8,4.5\n")
    config = reader_config(path, has_header=False, columns=["label", "user", "other", "price"])
    frame = read_file(path, config)
    assert frame.columns == ["label", "user", "price"]
    assert frame["user"].to_list() == ["u1", "u2"]
    assert frame["price"].to_list() == [2.0, 4.5]


@pytest.mark.parametrize(
    "columns", [["label", "user", "price"], ["label", "user", "price", "a", "b"]]
)
def test_wrong_column_count_vs_config_columns_is_data_error(
    tmp_path: Path, columns: list[str]
) -> None:
    path = write_file(tmp_path, "1,u1,9,2.0\n0,u2,8,4.5\n")
    config = reader_config(path, has_header=False, columns=columns)
    with pytest.raises(DataError, match=rf"has 4 columns but data\.columns names {len(columns)}"):
        read_file(path, config)


def test_numeric_parsed_to_float64_with_empty_as_null(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n1,a,\n0,b, 3.25 \n1,c,-1e3\n0,d,\n")
    frame = read_file(path, reader_config(path))
    assert frame["price"].dtype == pl.Float64
    assert frame["price"].to_list() == [None, 3.25, -1000.0, None]


def test_non_numeric_value_names_column_value_and_line(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n1,a,1\n0,b,2\n1,c,abc\n")
    with pytest.raises(DataError, match=r"column 'price' must be numeric, got 'abc' on line 4 "):
        read_file(path, reader_config(path))


def test_labels_minus_one_and_one_map_to_zero_and_one(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n-1,a,1\n1,b,2\n0,c,3\n")
    assert read_file(path, reader_config(path))["label"].to_list() == [0.0, 1.0, 0.0]


def test_label_not_binary_names_the_line(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n1,a,1\n0,b,2\n2,c,3\n")
    with pytest.raises(DataError, match=r"must hold 0/1 .*got '2' on line 4 of .*data\.csv"):
        read_file(path, reader_config(path))


def test_label_not_binary_line_counts_without_header(tmp_path: Path) -> None:
    path = write_file(tmp_path, "1,a,1\n0.5,b,2\n")
    config = reader_config(path, has_header=False, columns=["label", "user", "price"])
    with pytest.raises(DataError, match=r"got '0\.5' on line 2 "):
        read_file(path, config)


def test_empty_label_is_data_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n1,a,1\n,b,2\n")
    with pytest.raises(DataError, match=r"label column 'label' is empty on line 3"):
        read_file(path, reader_config(path))


def test_header_only_file_has_no_data_rows(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n")
    with pytest.raises(DataError, match="no data rows"):
        read_file(path, reader_config(path))


def test_empty_and_missing_files_are_data_errors(tmp_path: Path) -> None:
    empty = write_file(tmp_path, "")
    with pytest.raises(DataError, match="is empty"):
        read_file(empty, reader_config(empty))
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="not found"):
        read_file(missing, reader_config(missing))


def test_missing_feature_column_is_schema_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user\n1,a\n")
    with pytest.raises(SchemaError, match=r"\['price'\] used by data\.features not found"):
        read_file(path, reader_config(path))


def test_label_optional_when_scoring(tmp_path: Path) -> None:
    path = write_file(tmp_path, "user,price\na,1\n")
    with pytest.raises(SchemaError, match="label column 'label' not found"):
        read_file(path, reader_config(path))
    assert read_file(path, reader_config(path), require_label=False).columns == ["user", "price"]


def test_ragged_line_is_data_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n1,a,1\n0,b,2,extra\n")
    with pytest.raises(
        DataError,
        match=r"line 3 of .*data\.csv has 4 fields, expected 3; fix the line or remove it",
    ):
        read_file(path, reader_config(path))


def test_tsv_and_custom_separator(tmp_path: Path) -> None:
    tsv = write_file(tmp_path, "label\tuser\tprice\n1\ta,b\t1.5\n", name="data.tsv")
    assert read_file(tsv, reader_config(tsv, format="tsv"))["user"].to_list() == ["a,b"]
    semi = write_file(tmp_path, "label;user;price\n0;x;2\n", name="semi.csv")
    assert read_file(semi, reader_config(semi, separator=";"))["price"].to_list() == [2.0]


def test_criteo_recipe_reads_tsv_without_header(shared_data: Path) -> None:
    path = shared_data / "criteo_small" / "train.csv"
    config = DataConfig.model_validate(apply_recipe({"recipe": "criteo", "train": path}))
    frame = read_file(path, config)
    assert frame.shape == (7_200, 40)
    assert frame.columns == ["label", *CRITEO_NUMERIC, *CRITEO_CATEGORICAL]
    assert set(frame["label"].unique().to_list()) == {0.0, 1.0}
    assert int(frame["label"].sum()) == 1_549  # from SOURCE.md
    assert all(frame[c].dtype == pl.Float64 for c in CRITEO_NUMERIC)
    assert all(frame[c].dtype == pl.String for c in CRITEO_CATEGORICAL)
    # Empty cells become nulls (counts from SOURCE.md); the first row starts 0, 1, 1, 5, 0.
    assert frame["I1"].null_count() == 3_247
    assert frame["C3"].null_count() == 238
    assert frame.row(0)[:5] == (0.0, 1.0, 1.0, 5.0, 0.0)
    assert frame["C1"][0] == "68fd1e64"


# ----------------------------------------------------------------------------- Parquet
def test_parquet_integer_categoricals_encode_like_csv_text(tmp_path: Path) -> None:
    table = pl.DataFrame(
        {
            "label": [1, 0, 1, 0, -1],
            "user": [7, 8, 7, 9, 8],
            "price": [1, 2, None, 4, 5],
            "unused": ["a", "b", "c", "d", "e"],
        }
    )
    parquet = tmp_path / "data.parquet"
    table.write_parquet(parquet)
    frame = read_file(parquet, reader_config(parquet, format="parquet"))
    assert frame.columns == ["label", "user", "price"]
    assert frame["label"].to_list() == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert frame["price"].dtype == pl.Float64
    assert frame["price"].to_list() == [1.0, 2.0, None, 4.0, 5.0]
    # A processor fitted on the Parquet file encodes the same rows given as CSV text alike.
    csv = write_file(tmp_path, "label,user,price\n1,7,1\n0,8,2\n1,7,\n0,9,4\n0,8,5\n")
    config = reader_config(parquet, format="parquet")
    processor = FeatureProcessor(config.features).fit(frame)
    from_csv = processor.transform(read_file(csv, reader_config(csv)))
    from_parquet = processor.transform(frame)
    np.testing.assert_array_equal(from_parquet.categorical, from_csv.categorical)
    np.testing.assert_array_equal(from_parquet.numeric, from_csv.numeric)
    assert len(set(from_parquet.categorical[:, 0].tolist())) == 3  # 3 distinct users, no OOV


# ----------------------------------------------------------------------------- libsvm
def test_libsvm_tiny_file_with_field_ranges(tmp_path: Path) -> None:
    path = write_file(tmp_path, "-1 0:1 5:1\n1 2:1 3:1 4:1\n", name="tiny.libfm")
    config = DataConfig.model_validate(
        {
            "format": "libsvm",
            "train": path,
            "features": [
                {"name": "a", "type": "categorical"},
                {"name": "b", "type": "sequence"},  # line 2 holds two indices of b
            ],
            "libsvm": {
                "fields": [{"name": "a", "start": 0, "end": 3}, {"name": "b", "start": 3, "end": 9}]
            },
        }
    )
    frame = read_file(path, config)
    assert frame.columns == ["label", "a", "b"]
    assert frame["label"].to_list() == [0.0, 1.0]
    assert frame["a"].to_list() == ["0", "2"]
    assert frame["b"].to_list() == ["5", "3^4"]


def test_libsvm_frappe_test_file(shared_data: Path) -> None:
    path = shared_data / "frappe" / "frappe.test.libfm"
    fields = [
        {"name": name, "start": start, "end": end}
        for name, start, end in zip(
            FRAPPE_FIELDS, FRAPPE_STARTS[:-1], FRAPPE_STARTS[1:], strict=True
        )
    ]
    config = DataConfig.model_validate(
        {
            "format": "libsvm",
            "train": path,
            "features": [{"name": n, "type": "categorical"} for n in FRAPPE_FIELDS[:3]],
            "libsvm": {"fields": fields},
        }
    )
    frame = read_file(path, config)
    assert frame.columns == ["label", "user", "item", "daytime"]  # only the needed fields
    assert frame.height == 28_860
    lines = path.read_text().splitlines()
    positives = sum(line.startswith("1 ") for line in lines)
    assert set(frame["label"].unique().to_list()) == {0.0, 1.0}
    assert int(frame["label"].sum()) == positives
    first = lines[0].split()  # -1 204:1 4798:1 5041:1 ...
    assert frame.row(0) == (0.0, first[1].split(":")[0], first[2].split(":")[0], "5041")


# ----------------------------------------------------------------------------- end to end
def test_frappe_x1_recipe_reads_train(shared_data: Path) -> None:
    path = shared_data / "frappe_x1" / "train.csv"
    config = DataConfig.model_validate(apply_recipe({"recipe": "frappe_x1", "train": path}))
    frame = read_file(path, config)
    assert frame.height == 202_812
    assert frame.columns == ["label", *FRAPPE_FIELDS]
    assert all(frame[c].dtype == pl.String for c in FRAPPE_FIELDS)
    assert set(frame["label"].unique().to_list()) == {0.0, 1.0}
    assert frame.row(0) == (
        0.0, "187", "2398", "night", "friday", "workday", "unknown", "free", "foggy", "Peru", "799"
    )  # fmt: skip
