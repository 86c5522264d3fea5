"""read_file checks: ragged lines, group column, scoring without labels, Parquet rows, column
projection, Polars errors and directories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from conftest import reader_config, write_file
from finalmlp.data import readers
from finalmlp.data.csvlines import CsvStructure
from finalmlp.data.readers import read_file
from finalmlp.errors import DataError, SchemaError


# ----------------------------------------------------------------------------- ragged lines
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1,a,1\n0,b,2,extra\n1,c,3\n", r"line 3 of .*data\.csv has 4 fields, expected 3"),
        ("1,a,1\n0,b\n1,c,3\n", r"line 3 of .*data\.csv has 2 fields, expected 3"),
        ("1,a,1\n0,b,2\n1\n", r"line 4 of .*data\.csv has 1 fields, expected 3"),
        ("1,a,1\n\n1,c,3\n", r"line 3 of .*data\.csv is blank, expected 3"),
        ("1,a,1\n1,c,3\n\n", r"line 4 of .*data\.csv is blank, expected 3"),
        ('1,"a,b",1\n0,"x""y",2\n1,"c,d",3,4\n', r"line 4 of .* has 4 fields, expected 3"),
        ('1,"two\nlines",1\n0,b,2,9\n', r"line 4 of .*data\.csv has 4 fields, expected 3"),
    ],
    ids=["long", "short", "label_only", "blank", "trailing_blank", "quoted", "multiline"],
)
def test_ragged_lines_name_line_fields_and_fix(tmp_path: Path, body: str, message: str) -> None:
    path = write_file(tmp_path, "label,user,price\n" + body)
    with pytest.raises(DataError, match=message + "; fix the line or remove it"):
        read_file(path, reader_config(path))


def test_ragged_line_in_an_unread_column_is_still_found(tmp_path: Path) -> None:
    # The extra field lies beyond the columns read: Polars alone would not notice it.
    path = write_file(tmp_path, "label,user,price,junk\n1,a,1,x\n0,b,2,y,z\n")
    with pytest.raises(DataError, match=r"line 3 of .* has 5 fields, expected 4"):
        read_file(path, reader_config(path))


def test_quoted_separators_and_crlf_are_not_ragged(tmp_path: Path) -> None:
    path = write_file(tmp_path, 'label,user,price\r\n1,"a,b",1\r\n0,"say ""hi"", ok",2\r\n')
    frame = read_file(path, reader_config(path))
    assert frame["user"].to_list() == ["a,b", 'say "hi", ok']


def test_multiline_quoted_field_is_read(tmp_path: Path) -> None:
    path = write_file(tmp_path, 'label,user,price\n1,"two\nlines",1\n0,b,2\n')
    assert read_file(path, reader_config(path))["user"].to_list() == ["two\nlines", "b"]


def test_ragged_line_without_header_counts_from_line_one(tmp_path: Path) -> None:
    path = write_file(tmp_path, "1\tu1\t2.0\n0\tu2\n", name="data.tsv")
    config = reader_config(path, format="tsv", has_header=False, columns=["label", "user", "price"])
    with pytest.raises(DataError, match=r"line 2 of .*data\.tsv has 2 fields, expected 3"):
        read_file(path, config)


def test_polars_ragged_error_is_located_with_the_csv_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The line scan would find it first: pretend it found nothing, so Polars' refusal is hit.
    monkeypatch.setattr(readers, "scan_structure", lambda *args: CsvStructure.clean())
    path = write_file(tmp_path, 'label,user,price\n1,"x\ny",1\n0,b,2\n1,c,3,4\n')
    with pytest.raises(DataError, match=r"line 5 of .*data\.csv has 4 fields, expected 3"):
        read_file(path, reader_config(path))


def test_one_column_file_keeps_blank_values(tmp_path: Path) -> None:
    path = write_file(tmp_path, "user\na\n\nb\n")
    config = reader_config(path, features=[{"name": "user", "type": "categorical"}])
    assert read_file(path, config, require_label=False)["user"].to_list() == ["a", None, "b"]


# ----------------------------------------------------------------------------- group, label
def test_group_column_absent_from_the_file_is_schema_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n1,a,1\n")
    with pytest.raises(
        SchemaError,
        match=r"group column 'session' \(data\.group\) not found in .*data\.csv; its columns "
        r"are \['label', 'user', 'price'\]\. Set data\.group",
    ):
        read_file(path, reader_config(path, group="session"))
    parquet = tmp_path / "data.parquet"
    pl.DataFrame({"label": [1], "user": ["a"], "price": [1.0]}).write_parquet(parquet)
    with pytest.raises(SchemaError, match=r"group column 'session' .* not found in .*\.parquet"):
        read_file(parquet, reader_config(parquet, format="parquet", group="session"))


def test_group_column_is_read_and_not_needed_when_scoring(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price,session\n1,a,1,s1\n")
    assert read_file(path, reader_config(path, group="session")).columns[-1] == "session"
    bare = write_file(tmp_path, "user,price\na,1\n", name="score.csv")
    assert read_file(bare, reader_config(bare, group="session"), require_label=False).columns == [
        "user",
        "price",
    ]


def test_scoring_drops_the_label_even_if_blank_or_not_binary(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,price\n,a,1\nmaybe,b,2\n7,c,3\n")
    frame = read_file(path, reader_config(path), require_label=False)
    assert frame.columns == ["user", "price"]
    assert frame.height == 3


# ----------------------------------------------------------------------------- Parquet
def _parquet(tmp_path: Path, **columns: list[Any]) -> Path:
    path = tmp_path / "data.parquet"
    pl.DataFrame(columns).write_parquet(path)
    return path


def test_parquet_errors_say_row_not_line(tmp_path: Path) -> None:
    bad_label = _parquet(tmp_path, label=[1, 0, 2], user=["a", "b", "c"], price=[1.0, 2.0, 3.0])
    with pytest.raises(DataError, match=r"got 2 on row 3 of .*data\.parquet.*; binarize"):
        read_file(bad_label, reader_config(bad_label, format="parquet"))
    empty = _parquet(tmp_path, label=[1, None], user=["a", "b"], price=[1.0, 2.0])
    with pytest.raises(DataError, match=r"is empty on row 2 of .*data\.parquet"):
        read_file(empty, reader_config(empty, format="parquet"))
    text = _parquet(tmp_path, label=[1, 0], user=["a", "b"], price=["1", "x"])
    with pytest.raises(DataError, match=r"got 'x' on row 2 of .*data\.parquet"):
        read_file(text, reader_config(text, format="parquet"))


# ----------------------------------------------------------------------------- projection
def test_only_needed_columns_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    real_csv, real_parquet = pl.read_csv, pl.read_parquet

    def spy_csv(*args: Any, **kwargs: Any) -> pl.DataFrame:
        calls.append(kwargs)
        return real_csv(*args, **kwargs)

    def spy_parquet(*args: Any, **kwargs: Any) -> pl.DataFrame:
        calls.append(kwargs)
        return real_parquet(*args, **kwargs)

    monkeypatch.setattr(pl, "read_csv", spy_csv)
    monkeypatch.setattr(pl, "read_parquet", spy_parquet)
    path = write_file(tmp_path, "junk,price,label,user\nx,1,1,a\n")
    assert read_file(path, reader_config(path)).columns == ["label", "user", "price"]
    data_reads = [c for c in calls if c.get("n_rows") != 0]
    assert [c["columns"] for c in data_reads] == [[2, 3, 1]]
    calls.clear()
    parquet = _parquet(tmp_path, junk=["x"], price=[1.0], label=[1], user=["a"])
    assert read_file(parquet, reader_config(parquet, format="parquet")).columns[0] == "label"
    assert [c["columns"] for c in calls] == [["label", "user", "price"]]


# ----------------------------------------------------------------------------- polars errors
def test_duplicate_header_names_are_data_error(tmp_path: Path) -> None:
    path = write_file(tmp_path, "label,user,user,price\n1,a,b,1\n")
    with pytest.raises(
        DataError, match=r"header of .*data\.csv names column 'user' more than once; rename"
    ):
        read_file(path, reader_config(path))


def test_corrupt_parquet_is_data_error_with_polars_first_line(tmp_path: Path) -> None:
    path = write_file(tmp_path, "this is not parquet\n", name="data.parquet")
    with pytest.raises(DataError, match=r"cannot read .*data\.parquet as parquet: \S") as info:
        read_file(path, reader_config(path, format="parquet"))
    assert "\n" not in str(info.value)


def test_polars_error_while_reading_becomes_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def duplicate(*args: Any, **kwargs: Any) -> pl.DataFrame:
        raise pl.exceptions.DuplicateError("column with name 'user' has more than one occurrence")

    path = write_file(tmp_path, "label,user,price\n1,a,1\n")
    monkeypatch.setattr(pl, "read_csv", duplicate)
    with pytest.raises(
        DataError, match=r"cannot read .*data\.csv as csv: column with name 'user' has more"
    ):
        read_file(path, reader_config(path))


def test_directory_is_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "day_0"
    folder.mkdir()
    with pytest.raises(DataError, match=r"day_0 is a directory, expected a file; point"):
        read_file(folder, reader_config(folder))
