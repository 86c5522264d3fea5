"""Tune files and search spaces: every mistake is a ConfigError naming the key, before training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from tune_setup import SPACE, write_tune

from finalmlp.errors import ConfigError
from finalmlp.tune.space import check_space, load_base
from finalmlp.tune.spec import load_tune_spec


def _check(tmp_path: Path, space: dict[str, Any], **keys: Any) -> list[str]:
    spec = load_tune_spec(write_tune(tmp_path, space, **keys))
    return check_space(spec, load_base(spec))[1]


def test_a_valid_space_resolves_base_and_gives_the_base_values(tmp_path: Path) -> None:
    spec = load_tune_spec(write_tune(tmp_path))
    assert spec.base == (tmp_path / "base.yaml").resolve()
    assert spec.direction == "maximize"
    base_params, notes = check_space(spec, load_base(spec))
    assert base_params == {
        "model.mlp1.dropout": 0.2,
        "train.learning_rate": 1.0e-3,
        "model.num_heads": 2,
        "model.mlp2.hidden_units": "[16]",  # list choices are stored as their YAML text
    }
    assert notes == []


@pytest.mark.parametrize(
    ("param", "match"),
    [
        (
            {"type": "float", "lo": 0.1, "high": 0.5},
            r"space 'model.mlp1.dropout': unknown key "
            r"'lo'; did you mean 'low'\?",
        ),
        ({"low": 0.1, "high": 0.5}, r"space 'model.mlp1.dropout': missing key 'type'"),
        ({"type": "floot", "low": 0.1, "high": 0.5}, r"'float', 'int', 'categorical'"),
        ({"type": "float", "low": 0.5, "high": 0.1}, r"low must be below high"),
        ({"type": "float", "low": 0.0, "high": 0.5, "log": True}, r"log needs low > 0"),
        ({"type": "float", "high": 0.5}, r"missing required key 'low'"),
        ({"type": "categorical", "choices": []}, r"choices"),
        ({"type": "categorical", "choices": [1, 1]}, r"choices repeat a value"),
    ],
)
def test_bad_parameters_name_the_key(tmp_path: Path, param: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_tune_spec(write_tune(tmp_path, {"model.mlp1.dropout": param}))


def test_a_misspelt_top_level_key_gets_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump({"base": "b.yaml", "spcae": SPACE}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'spcae'; did you mean 'space'\?"):
        load_tune_spec(path)


def test_an_experiment_config_is_not_a_tune_file(tmp_path: Path) -> None:
    write_tune(tmp_path)
    with pytest.raises(ConfigError, match=r"is an experiment config; .*base .*space"):
        load_tune_spec(tmp_path / "base.yaml")


def test_a_missing_tune_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tune file '.*nope.yaml' not found"):
        load_tune_spec(tmp_path / "nope.yaml")


def test_a_path_that_names_no_setting_suggests_the_closest(tmp_path: Path) -> None:
    space = {"model.mlp1.dropuot": {"type": "float", "low": 0.1, "high": 0.5}}
    with pytest.raises(
        ConfigError,
        match=r"space 'model.mlp1.dropuot': the config has no such setting; "
        r"did you mean 'model.mlp1.dropout'\?",
    ):
        _check(tmp_path, space)


def test_a_bound_the_config_rejects_is_reported_with_the_config_message(tmp_path: Path) -> None:
    space = {"model.mlp1.dropout": {"type": "float", "low": 0.1, "high": 1.0}}
    with pytest.raises(ConfigError, match=r"space 'model.mlp1.dropout' at 1.0: .*dropout"):
        _check(tmp_path, space)


def test_the_base_value_must_lie_in_the_space(tmp_path: Path) -> None:
    space = {"train.learning_rate": {"type": "float", "low": 1.0e-2, "high": 1.0e-1}}
    with pytest.raises(ConfigError, match=r"base config's value 0.001 is outside .* trial 0"):
        _check(tmp_path, space)
    space = {"model.num_heads": {"type": "categorical", "choices": [1, 4]}}
    with pytest.raises(ConfigError, match=r"value 2 is not among the choices \[1, 4\]"):
        _check(tmp_path, space)


def test_a_choice_no_combination_accepts_is_an_error(tmp_path: Path) -> None:
    space = {"model.num_heads": {"type": "categorical", "choices": [2, 3]}}
    with pytest.raises(
        ConfigError,
        match=r"space 'model.num_heads': choice 3 gives no valid "
        r"config: .*num_heads=3 must divide",
    ):
        _check(tmp_path, space)


def test_some_invalid_combinations_are_a_note(tmp_path: Path) -> None:
    space = {
        "model.num_heads": {"type": "categorical", "choices": [1, 2, 4]},
        "model.mlp2.hidden_units": {"type": "categorical", "choices": [[16], [6]]},
    }
    notes = _check(tmp_path, space)
    assert len(notes) == 1
    assert notes[0].startswith("1 of 6 combinations of the categorical choices are invalid")
    assert "num_heads=4 must divide" in notes[0]


def test_gauc_needs_a_group_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metric gauc needs data.group"):
        _check(tmp_path, SPACE, metric="gauc")


def test_logloss_is_minimised(tmp_path: Path) -> None:
    assert load_tune_spec(write_tune(tmp_path, metric="logloss")).direction == "minimize"
