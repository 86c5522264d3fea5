"""docs/models.md lists every model's defaults, as the code has them (issue 16, point 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from finalmlp.schema import ExperimentConfig, ModelConfig
from finalmlp.schema.models import MODEL_TRAIN_DEFAULTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        if "hidden_units" in value:
            parts = [str(value["hidden_units"])]
            if value.get("dropout"):
                parts.append(f"dropout {value['dropout']}")
            if value.get("batch_norm"):
                parts.append("BN")
            return " ".join(parts)
        return "{" + ", ".join(f"{k}: {_compact(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def default_rows() -> list[str]:
    rows = []
    for cls in get_args(get_args(ModelConfig)[0]):
        name = cls.model_fields["name"].default
        train = MODEL_TRAIN_DEFAULTS[name]
        keys = cls().model_dump(exclude={"name"}).items()
        model = "; ".join(f"{k}: {_compact(v)}" for k, v in keys) or "-"
        rows.append(
            f"| `{name}` | {train['learning_rate']:g} | {train['embedding_l2']:g} | {model} |"
        )
    return rows


def test_every_models_defaults_are_documented_as_the_code_has_them() -> None:
    text = DOC.read_text(encoding="utf-8")
    for row in default_rows():
        assert row in text, f"docs/models.md lacks or misstates: {row}"


def test_train_defaults_follow_the_model_unless_set() -> None:
    data = {"train": "x.csv", "features": [{"name": "a", "type": "categorical"}]}
    lr = ExperimentConfig.model_validate({"data": data, "model": {"name": "lr"}})
    assert (lr.train.learning_rate, lr.train.embedding_l2) == (1e-2, 0.0)
    final = ExperimentConfig.model_validate({"data": data})
    assert (final.train.learning_rate, final.train.embedding_l2) == (1e-3, 0.05)
    set_here = ExperimentConfig.model_validate(
        {"data": data, "model": {"name": "lr"}, "train": {"learning_rate": 3e-3}}
    )
    assert (set_here.train.learning_rate, set_here.train.embedding_l2) == (3e-3, 0.0)
    again = ExperimentConfig.model_validate_json(set_here.model_dump_json())
    assert again == set_here  # the run's config.json reads back to the same settings


def test_finalmlp_heads_default_to_five_or_a_divisor_of_both_widths() -> None:
    data = {"train": "x.csv", "features": [{"name": "a", "type": "categorical"}]}
    assert ExperimentConfig.model_validate({"data": data}).model.num_heads == 5
    narrow = {"name": "finalmlp", "mlp2": {"hidden_units": [64]}}
    config = ExperimentConfig.model_validate({"data": data, "model": narrow})
    assert config.model.num_heads == 8  # the largest up to 10 dividing 400 and 64
