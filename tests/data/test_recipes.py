"""Recipes: the Criteo recipe keeps missing numerics apart from real values."""

from __future__ import annotations

from pathlib import Path

from finalmlp.data.readers import read_file
from finalmlp.data.recipes import CRITEO_CATEGORICAL, CRITEO_NUMERIC, apply_recipe, criteo
from finalmlp.features.processor import FeatureProcessor
from finalmlp.schema import DataConfig


def test_criteo_recipe_has_no_fill_value_for_log_square() -> None:
    assert all("fill_value" not in f for f in criteo()["features"])


def test_criteo_missing_numeric_is_not_minus_one(tmp_path: Path) -> None:
    # I1 is -1 on two lines and missing on two: four lines, two distinct I1 categories.
    rows = []
    for value in ["-1", "", "-1", ""]:
        numeric = [value] + ["1"] * (len(CRITEO_NUMERIC) - 1)
        rows.append("\t".join(["1", *numeric, *(["a"] * len(CRITEO_CATEGORICAL))]))
    path = tmp_path / "train.txt"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = DataConfig.model_validate(apply_recipe({"recipe": "criteo", "train": path}))
    config = config.model_copy(
        update={"features": [f.model_copy(update={"min_count": 1}) for f in config.features]}
    )
    frame = read_file(path, config)
    processor = FeatureProcessor(config.features).fit(frame)
    ids = processor.transform(frame).categorical[:, 0].tolist()
    assert ids[0] == ids[2] != ids[1] == ids[3]
