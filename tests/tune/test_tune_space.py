"""Dotted paths into a config: reading, setting (missing sections from the defaults), sampling,
and best.yaml's data paths made relative to the search folder."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import yaml
from tune_setup import write_tune

from finalmlp.config import load_config
from finalmlp.schema import FinalMLPConfig
from finalmlp.tune.space import (
    best_yaml,
    decode_params,
    get_path,
    load_base,
    set_path,
    suggest,
    trial_config,
    trial_raw,
)
from finalmlp.tune.spec import load_tune_spec


def test_get_path_reads_nested_values_and_raises_key_error() -> None:
    tree = {"model": {"mlp1": {"dropout": 0.2}}}
    assert get_path(tree, "model.mlp1.dropout") == 0.2
    with pytest.raises(KeyError):
        get_path(tree, "model.mlp2.dropout")
    with pytest.raises(KeyError):
        get_path(tree, "model.mlp1.dropout.x")


def test_set_path_copies_a_missing_section_from_the_defaults() -> None:
    raw: dict[str, object] = {"model": {"name": "finalmlp"}}
    defaults = {"model": {"name": "finalmlp", "mlp1": {"hidden_units": [400], "dropout": 0.4}}}
    set_path(raw, "model.mlp1.dropout", 0.1, defaults)
    assert raw == {"model": {"name": "finalmlp", "mlp1": {"hidden_units": [400], "dropout": 0.1}}}
    assert defaults["model"]["mlp1"]["dropout"] == 0.4  # the defaults are never changed


def test_trial_config_applies_params_and_leaves_the_base_alone(tmp_path: Path) -> None:
    base = load_base(load_tune_spec(write_tune(tmp_path)))
    params = {"model.mlp1.dropout": 0.35, "model.mlp2.hidden_units": [32, 16], "train.net_l2": 0.1}
    config = trial_config(base, params, "trial 1")
    assert isinstance(config.model, FinalMLPConfig)
    assert config.model.mlp1.dropout == 0.35
    assert config.model.mlp1.hidden_units == [16]  # untouched siblings stay
    assert config.model.mlp2.hidden_units == [32, 16]
    assert config.train.net_l2 == 0.1  # a key the YAML leaves to its default
    assert base.raw["model"]["mlp1"]["dropout"] == 0.2
    assert "net_l2" not in base.raw["train"]
    assert config.data == base.config.data  # so trials share the prepared data


def test_suggest_decodes_list_choices(tmp_path: Path) -> None:
    spec = load_tune_spec(write_tune(tmp_path))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"model.mlp2.hidden_units": "[32, 16]"})
    trial = study.ask()
    params = suggest(trial, spec.space)
    assert params["model.mlp2.hidden_units"] == [32, 16]
    assert 0.0 <= params["model.mlp1.dropout"] <= 0.5
    assert params["model.num_heads"] in (1, 2, 4)
    assert decode_params(spec.space, trial.params) == params


def test_best_yaml_rebases_relative_data_paths(tmp_path: Path) -> None:
    base = load_base(load_tune_spec(write_tune(tmp_path)))
    out_dir = tmp_path / "runs" / "search"
    raw = best_yaml(base, {"model.num_heads": 4}, out_dir)
    assert raw["data"]["cache_dir"] == os.path.join("..", "..", "cache")
    assert raw["model"]["num_heads"] == 4
    assert trial_raw(base, {})["data"]["cache_dir"] == "cache"
    out_dir.mkdir(parents=True)
    (out_dir / "best.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    config = load_config(out_dir / "best.yaml")
    assert config.data.cache_dir == (tmp_path / "cache").resolve()
