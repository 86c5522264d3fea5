"""`schema infer` proposes a complete starting config (issue 16, point 2): valid/test files
read, integer codes kept categorical, model and regularisation sized to the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finalmlp.config import parse_config
from finalmlp.errors import DataError
from finalmlp.features.infer import config_skeleton, count_rows, infer_schema


def _frame(rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    slots = np.array([33, 35, 39, 161, 167, 175, 295, 297, 303, 417, 425, 427, 431, 543, 547,
                      551, 673, 679, 681, 801, 803, 809, 1063, 1835])  # fmt: skip
    weights = np.linspace(3, 0.1, len(slots))
    return pl.DataFrame(
        {
            "click": rng.integers(0, 2, rows),
            "ad_slot": rng.choice(slots, rows, p=weights / weights.sum()),
            "visits": rng.geometric(0.1, rows) - 1,  # a count: 0, 1, 2, ... a long tail
            "site": [f"s{v}" for v in rng.integers(0, 30, rows)],
        }
    )


def test_integer_codes_with_gaps_are_categorical_and_counts_numeric(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    _frame(2000, 0).write_csv(source)
    kinds = {f["name"]: f["type"] for f in infer_schema(source).data["features"]}
    assert kinds == {"ad_slot": "categorical", "visits": "numeric", "site": "categorical"}


def test_valid_and_test_files_are_read_and_named(tmp_path: Path) -> None:
    train, valid, test = (tmp_path / f"{n}.csv" for n in ("train", "valid", "test"))
    _frame(3000, 0).write_csv(train)
    _frame(500, 1).write_csv(valid, include_header=False)  # a header in one file, not another
    _frame(500, 2).write_csv(test)
    inferred = infer_schema(train, valid=valid, test=test)
    assert inferred.data["valid"] == str(valid.resolve())
    assert inferred.data["test"] == str(test.resolve())
    assert inferred.data["has_header"] == "auto"
    assert inferred.stats["site"]["distinct"] == 30
    assert inferred.train_rows == 3000
    assert any("500 rows of the valid file" in note for note in inferred.notes)
    config = parse_config(inferred.config())
    assert config.data.valid == valid.resolve()
    other = tmp_path / "other.csv"
    _frame(100, 3).drop("site").write_csv(other)
    with pytest.raises(DataError, match=r"the test file .*other\.csv has columns"):
        infer_schema(train, test=other)


@pytest.mark.parametrize(
    ("rows", "batch", "width", "l2"),
    [(7_200, 256, [200], None), (30_000, 512, [200], None), (202_812, 4096, None, None),
     (5_000_000, 4096, None, 1e-5)],
)  # fmt: skip
def test_skeleton_is_sized_to_the_rows(
    rows: int, batch: int, width: list[int] | None, l2: float | None
) -> None:
    skeleton = config_skeleton(rows)
    assert skeleton["train"]["batch_size"] == batch
    assert skeleton["model"].get("mlp1", {}).get("hidden_units") == width
    assert skeleton["train"].get("embedding_l2") == l2
    assert "learning_rate" not in skeleton["train"]  # the model's own default


def test_rows_are_counted_past_the_sample(tmp_path: Path) -> None:
    source = tmp_path / "train.csv"
    _frame(1200, 0).write_csv(source)
    assert count_rows(source, "csv", has_header=True) == 1200
    inferred = infer_schema(source, sample_rows=100)
    assert inferred.train_rows == 1200
    assert inferred.config()["train"]["batch_size"] == 256
