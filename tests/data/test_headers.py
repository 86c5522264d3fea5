"""Header lines decided per file: train with a header and valid/test without (or the reverse),
per-split settings, recipes that keep their column names, and errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import write_file
from finalmlp.config import parse_config
from finalmlp.data.dataset import load_frames
from finalmlp.data.readers import read_file
from finalmlp.errors import ConfigError, DataError
from finalmlp.schema import DataConfig

HEADER = "label,user,price\n"
ROWS = "1,a,1.5\n0,b,2.5\n1,1,3.5\n"
FEATURES = [{"name": "user", "type": "categorical"}, {"name": "price", "type": "numeric"}]


def _config(tmp_path: Path, files: dict[str, str], **data: Any) -> DataConfig:
    paths = {split: write_file(tmp_path, text, f"{split}.csv") for split, text in files.items()}
    return DataConfig.model_validate({**paths, "features": FEATURES, **data})


def test_train_with_a_header_and_valid_test_without(tmp_path: Path) -> None:
    # Was: "the header of valid.csv names column '1' more than once".
    config = _config(tmp_path, {"train": HEADER + ROWS, "valid": ROWS, "test": ROWS})
    frames = load_frames(config)
    assert [frames[s].height for s in ("train", "valid", "test")] == [3, 3, 3]
    assert frames["valid"]["user"].to_list() == ["a", "b", "1"]  # line 1 is a row


def test_train_without_a_header_and_valid_test_with_one(tmp_path: Path) -> None:
    files = {"train": ROWS, "valid": HEADER + ROWS, "test": HEADER + ROWS}
    config = _config(tmp_path, files, columns=["label", "user", "price"])
    frames = load_frames(config)
    assert [frames[s].height for s in ("train", "valid", "test")] == [3, 3, 3]
    assert frames["train"]["price"].to_list() == [1.5, 2.5, 3.5]


def test_a_header_in_another_column_order_is_used(tmp_path: Path) -> None:
    files = {"train": ROWS, "valid": "price,label,user\n9.5,1,z\n"}
    config = _config(tmp_path, files, columns=["label", "user", "price"])
    valid = read_file(config.valid, config, split="valid")  # type: ignore[arg-type]
    assert valid.rows() == [(1.0, "z", 9.5)]


def test_per_split_setting(tmp_path: Path) -> None:
    files = {"train": HEADER + ROWS, "valid": ROWS, "test": ROWS}
    config = _config(tmp_path, files, has_header={"train": True, "valid": False})  # test: auto
    assert load_frames(config)["valid"].height == 3


def test_explicit_true_on_a_file_without_header_says_so(tmp_path: Path) -> None:
    config = _config(tmp_path, {"train": HEADER + ROWS, "valid": ROWS}, has_header=True)
    message = (
        r"the first line of .*valid\.csv is data, not a header \(it holds '1', 'a', '1\.5'\), "
        r"but data\.has_header \(valid\) says it has a header; is a header present in one "
        r"file and not in another\? Set data\.has_header: auto"
    )
    with pytest.raises(DataError, match=message):
        load_frames(config)


def test_explicit_false_on_a_file_with_a_header_says_so(tmp_path: Path) -> None:
    files = {"train": ROWS, "valid": HEADER + ROWS}
    config = _config(tmp_path, files, has_header=False, columns=["label", "user", "price"])
    message = (
        r"line 1 of .*valid\.csv is a header \(it names 'label', 'user', 'price'\), but "
        r"data\.has_header \(valid\) is false for this file; set it to auto"
    )
    with pytest.raises(DataError, match=message):
        load_frames(config)


def test_no_header_and_no_column_names(tmp_path: Path) -> None:
    config = _config(tmp_path, {"train": ROWS})
    message = r"train\.csv has no header line, and no column names are known .* data\.columns"
    with pytest.raises(DataError, match=message):
        read_file(config.train, config, split="train")  # type: ignore[arg-type]


def test_header_naming_a_column_twice(tmp_path: Path) -> None:
    config = _config(tmp_path, {"train": "label,user,price,user\n1,a,1.5,b\n"})
    with pytest.raises(DataError, match=r"header of .*train\.csv names column 'user' more than"):
        read_file(config.train, config)  # type: ignore[arg-type]


def test_wrong_width_against_the_train_header(tmp_path: Path) -> None:
    config = _config(tmp_path, {"train": HEADER + ROWS, "valid": "1,a\n"})
    with pytest.raises(DataError, match=r"valid\.csv has 2 columns but the train file's header"):
        load_frames(config)


@pytest.mark.parametrize(
    ("recipe", "columns"),
    [("frappe_x1", ["label", "user", "item"]), ("avazu", ["id", "click", "hour", "C1"])],
)
def test_recipes_name_their_columns_without_a_header(recipe: str, columns: list[str]) -> None:
    # Was: "a file without header needs data.columns" with has_header: false.
    config = parse_config({"data": {"recipe": recipe, "train": "t.csv", "has_header": False}})
    assert config.data.columns is not None and config.data.columns[: len(columns)] == columns


def test_frappe_recipe_reads_a_headerless_copy(shared_data: Path, tmp_path: Path) -> None:
    lines = (shared_data / "frappe_x1" / "test.csv").read_text(encoding="utf-8").splitlines()
    bare = write_file(tmp_path, "\n".join(lines[1:201]) + "\n", "bare.csv")
    with_header = write_file(tmp_path, "\n".join(lines[:201]) + "\n", "header.csv")
    config = parse_config({"data": {"recipe": "frappe_x1", "train": str(with_header)}}).data
    assert read_file(bare, config).equals(read_file(with_header, config))


def test_label_error_on_a_header_line_says_so(tmp_path: Path) -> None:
    # has_header: false on a file whose header names other columns than data.columns.
    text = "click,user_id,cost\n1,a,1.5\n"
    config = _config(
        tmp_path, {"train": text}, has_header=False, columns=["label", "user", "price"]
    )
    message = r"got 'click' on line 1 of .*train\.csv.*; line 1 looks like a header read as data"
    with pytest.raises(DataError, match=message):
        read_file(config.train, config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("maybe", r"data\.has_header: expected true, false, auto, or one per split.*'maybe'"),
        ({"train": True, "dev": False}, r"splits are train, valid and test, got \['dev'\]"),
        ({"valid": "yes please"}, r"data\.has_header: expected true, false, auto"),
    ],
)
def test_bad_header_settings_are_config_errors(setting: object, message: str) -> None:
    raw = {"data": {"train": "t.csv", "has_header": setting, "features": FEATURES}}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)
