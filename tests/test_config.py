"""Config loading: recipes, relative paths, and one clear ConfigError per mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from finalmlp.config import load_config, parse_config
from finalmlp.errors import ConfigError
from finalmlp.schema import (
    CategoricalFeature,
    DualMLPConfig,
    FinalMLPConfig,
    NumericFeature,
    SequenceFeature,
)


def _features(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "type": "categorical"} for n in names]


def _write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- recipes
def test_frappe_recipe_gives_ten_categorical_features() -> None:
    cfg = parse_config({"data": {"recipe": "frappe_x1", "train": "/d/train.csv"}})
    assert len(cfg.data.features) == 10
    assert all(isinstance(f, CategoricalFeature) for f in cfg.data.features)
    assert cfg.data.feature_names[:3] == ["user", "item", "daytime"]
    assert cfg.data.label == "label" and cfg.data.format == "csv"
    assert isinstance(cfg.model, FinalMLPConfig)  # model and train sections are optional


def test_user_keys_override_recipe() -> None:
    raw = {
        "data": {
            "recipe": "frappe_x1",
            "train": "/d/train.tsv",
            "format": "tsv",
            "label": "click",
            "features": _features("user", "item"),
        }
    }
    cfg = parse_config(raw)
    assert cfg.data.label == "click"
    assert cfg.data.format == "tsv"
    assert cfg.data.feature_names == ["user", "item"]  # features replaces the recipe's list


def test_criteo_recipe_uses_log_square_numerics() -> None:
    cfg = parse_config({"data": {"recipe": "criteo", "train": "/d/train.txt"}})
    numeric = [f for f in cfg.data.features if isinstance(f, NumericFeature)]
    assert len(numeric) == 13 and len(cfg.data.features) == 39
    assert all(f.bucketize == "log_square" and f.min_count == 10 for f in numeric)
    assert cfg.data.has_header == "auto" and cfg.data.columns is not None


def test_synthetic_recipe_features_follow_synthetic_options() -> None:
    raw = {"data": {"recipe": "synthetic", "synthetic": {"num_categorical": 3, "num_numeric": 1}}}
    cfg = parse_config(raw)
    assert cfg.data.feature_names == ["c0", "c1", "c2", "n0"]
    assert cfg.data.train is None  # synthetic data needs no files


def test_unknown_recipe_suggests_close_name() -> None:
    expected = r"unknown data.recipe 'frape_x1'; did you mean 'frappe_x1'"
    with pytest.raises(ConfigError, match=expected):
        parse_config({"data": {"recipe": "frape_x1", "train": "x.csv"}})


# ----------------------------------------------------------------------------- files, paths
def test_relative_paths_resolve_against_config_directory(tmp_path: Path) -> None:
    raw = {
        "data": {
            "train": "data/train.csv",
            "valid": "../shared/valid.csv",
            "test": str(tmp_path / "abs" / "test.csv"),
            "cache_dir": "cache",
            "features": _features("a"),
        }
    }
    path = _write_yaml(tmp_path / "conf" / "exp.yaml", raw)
    cfg = load_config(path)
    assert cfg.data.train == (tmp_path / "conf" / "data" / "train.csv").resolve()
    assert cfg.data.valid == (tmp_path / "shared" / "valid.csv").resolve()
    assert cfg.data.test == tmp_path / "abs" / "test.csv"
    assert cfg.data.cache_dir == (tmp_path / "conf" / "cache").resolve()


def test_relative_field_map_resolves_against_config_directory(tmp_path: Path) -> None:
    raw = {
        "data": {
            "format": "libsvm",
            "train": "train.libsvm",
            "libsvm": {"field_map": "maps/fields.json"},
            "features": _features("a"),
        }
    }
    cfg = load_config(_write_yaml(tmp_path / "exp.yaml", raw))
    assert cfg.data.libsvm is not None
    assert cfg.data.libsvm.field_map == (tmp_path / "maps" / "fields.json").resolve()


def test_missing_config_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope\.yaml' not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_and_non_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml: expected a mapping with keys data"):
        load_config(bad)


def test_error_from_file_names_the_file(tmp_path: Path) -> None:
    raw = {"data": {"train": "t.csv", "features": _features("a")}, "train": {"bacth_size": 8}}
    path = _write_yaml(tmp_path / "exp.yaml", raw)
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown key 'train.bacth_size'"):
        load_config(path)


# ----------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize(
    ("raw", "key", "suggestion"),
    [
        (
            {"model": {"name": "finalmlp", "mlp1": {"hiden_units": [8]}}},
            "model.mlp1.hiden_units",
            "hidden_units",
        ),
        ({"model": {"name": "finalmlp", "embeding_dim": 4}}, "model.embeding_dim", "embedding_dim"),
        ({"model": {"name": "dualmlp", "mlp2": {"dropuot": 0.1}}}, "model.mlp2.dropuot", "dropout"),
        ({"train": {"learning_rat": 0.1}}, "train.learning_rat", "learning_rate"),
        ({"trian": {}}, "trian", "train"),
        ({"data": {"labl": "y"}}, "data.labl", "label"),
        ({"data": {"split": {"seeed": 1}}}, "data.split.seeed", "seed"),
        ({"data": {"synthetic": {"num_row": 500}}}, "data.synthetic.num_row", "num_rows"),
        (
            {"data": {"features": [{"name": "a", "type": "categorical", "min_cout": 2}]}},
            "data.features.0.min_cout",
            "min_count",
        ),
        (
            {"data": {"features": [{"name": "s", "type": "sequence", "seperator": ","}]}},
            "data.features.0.seperator",
            "separator",
        ),
    ],
)
def test_unknown_key_names_dotted_key_and_suggests_close_match(
    raw: dict[str, Any], key: str, suggestion: str
) -> None:
    base: dict[str, Any] = {"data": {"recipe": "synthetic", "synthetic": {"num_rows": 500}}}
    for section, value in raw.items():
        merged = {**base.get(section, {}), **value}
        base[section] = merged
    expected = rf"unknown key '{key}'; did you mean '{suggestion}'\?"
    with pytest.raises(ConfigError, match=expected):
        parse_config(base)


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    raw = {"data": {"recipe": "synthetic"}, "model": {"name": "dualmlp", "num_heads": 2}}
    with pytest.raises(ConfigError, match=r"unknown key 'model.num_heads'; valid keys: name, "):
        parse_config(raw)


def test_missing_discriminator_says_which_key_and_choices() -> None:
    raw = {"data": {"train": "t.csv", "features": [{"name": "a"}]}}
    with pytest.raises(
        ConfigError,
        match=r"missing required key 'data.features.0.type' \(one of 'categorical', 'numeric'",
    ):
        parse_config(raw)
    raw = {"data": {"recipe": "synthetic"}, "model": {"embedding_dim": 4}}
    with pytest.raises(ConfigError, match=r"missing required key 'model.name' \(one of 'finalmlp'"):
        parse_config(raw)


def test_wrong_value_names_key_and_value() -> None:
    raw = {"data": {"recipe": "synthetic"}, "train": {"batch_size": -3}}
    with pytest.raises(ConfigError, match=r"train.batch_size: .*greater than 0 \(got -3\)"):
        parse_config(raw)


# ----------------------------------------------------------------------------- model checks
def test_num_heads_must_divide_both_widths() -> None:
    model = {
        "name": "finalmlp",
        "num_heads": 3,
        "mlp1": {"hidden_units": [64, 12]},
        "mlp2": {"hidden_units": [8]},
    }
    with pytest.raises(
        ConfigError,
        match=r"num_heads=3 must divide both stream widths \(mlp1 ends with 12, mlp2 with 8\); "
        r"pick a common divisor such as \[1, 2, 4\]",
    ):
        parse_config({"data": {"recipe": "synthetic"}, "model": model})


def test_valid_heads_and_dualmlp_parse() -> None:
    model = {"name": "finalmlp", "num_heads": 4, "mlp1": {"hidden_units": [12]}}
    cfg = parse_config({"data": {"recipe": "synthetic"}, "model": model})
    assert isinstance(cfg.model, FinalMLPConfig) and cfg.model.mlp2.hidden_units == [100]
    cfg = parse_config({"data": {"recipe": "synthetic"}, "model": {"name": "dualmlp"}})
    assert isinstance(cfg.model, DualMLPConfig)


@pytest.mark.parametrize("key", ["fs1_context", "fs2_context"])
def test_fs_context_must_name_a_feature(key: str) -> None:
    raw = {"data": {"recipe": "synthetic"}, "model": {"name": "finalmlp", key: ["c0", "city"]}}
    with pytest.raises(ConfigError, match=rf"model.{key} names 'city', which is not a feature"):
        parse_config(raw)
    raw["model"][key] = ["c0", "c1"]
    assert getattr(parse_config(raw).model, key) == ["c0", "c1"]


# ----------------------------------------------------------------------------- data checks
def test_duplicate_feature_names() -> None:
    raw = {"data": {"train": "t.csv", "features": _features("a", "b", "a")}}
    with pytest.raises(ConfigError, match=r"feature names must be unique, got duplicates \['a'\]"):
        parse_config(raw)


def test_share_embedding_target_must_exist() -> None:
    features = [{"name": "hist", "type": "sequence", "share_embedding": "itme"}, *_features("item")]
    raw = {"data": {"train": "t.csv", "features": features}}
    with pytest.raises(
        ConfigError,
        match=r"feature 'hist' shares the embedding of 'itme', which is not a feature; "
        r"expected one of \['hist', 'item'\]",
    ):
        parse_config(raw)


@pytest.mark.parametrize(
    "target",
    [
        {"name": "item", "type": "numeric"},
        {"name": "item", "type": "numeric", "bucketize": "quantile"},
        {"name": "item", "type": "categorical", "share_embedding": "other"},
    ],
)
def test_share_embedding_target_must_own_a_table(target: dict[str, Any]) -> None:
    # Sharing a numeric or a sharing feature silently gave all-OOV ids or a split table.
    features = [{"name": "hist", "type": "sequence", "share_embedding": "item"}, target]
    features += _features("other")
    raw = {"data": {"train": "t.csv", "features": features}}
    with pytest.raises(ConfigError, match=r"'hist' shares the embedding of 'item', which has no"):
        parse_config(raw)


def test_share_embedding_parses() -> None:
    features = [{"name": "hist", "type": "sequence", "share_embedding": "item"}, *_features("item")]
    cfg = parse_config({"data": {"train": "t.csv", "features": features}})
    hist = cfg.data.features[0]
    assert isinstance(hist, SequenceFeature) and hist.share_embedding == "item"


def test_train_file_required_unless_synthetic() -> None:
    with pytest.raises(ConfigError, match=r"data.train is required"):
        parse_config({"data": {"features": _features("a")}})


def test_headerless_csv_needs_columns() -> None:
    raw = {"data": {"train": "t.csv", "has_header": False, "features": _features("a")}}
    with pytest.raises(ConfigError, match=r"without header needs data.columns"):
        parse_config(raw)


def test_empty_feature_list() -> None:
    with pytest.raises(ConfigError, match=r"at least one feature"):
        parse_config({"data": {"train": "t.csv", "features": []}})


def test_config_is_frozen() -> None:
    cfg = parse_config({"data": {"recipe": "synthetic"}})
    with pytest.raises(ValueError, match="frozen"):
        cfg.train.batch_size = 1  # type: ignore[misc]


def test_gauc_monitor_needs_a_group_column() -> None:
    raw = {
        "data": {"recipe": "synthetic"},
        "train": {"monitor": {"gauc": 1.0}},
    }
    with pytest.raises(ConfigError, match=r"gauc, which needs data\.group"):
        parse_config(raw)
    raw["data"]["group"] = "c0"
    assert parse_config(raw).train.monitor == {"gauc": 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train": {"monitor": {}}}, r"train\.monitor is empty"),
        ({"train": {"monitor": {"logloss": 1}}}, "logloss needs a negative weight"),
        ({"model": {"fs1_context": ["c0", "c0"]}}, "fs1_context lists a feature twice"),
        ({"data": {"label": "c1"}}, "label column 'c1' is also a feature"),
        ({"data": {"recipe": ["synthetic"]}}, "data.recipe must be a name"),
    ],
)
def test_settings_that_would_silently_misbehave_are_rejected(change: dict, message: str) -> None:
    raw: dict[str, Any] = {"data": {"recipe": "synthetic"}, "model": {"name": "finalmlp"}}
    for section, values in change.items():
        raw.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        ({"name": "x", "type": "categorical", "hash_buckets": 8, "min_count": 3}, "not to"),
        ({"name": "x", "type": "numeric", "bucketize": "quantile", "transform": "log"}, "not used"),
        ({"name": "x", "type": "numeric", "min_count": 3}, "only with bucketize: log_square"),
    ],
)
def test_feature_options_that_would_be_ignored_are_rejected(feature: dict, message: str) -> None:
    raw = {"data": {"train": "/d/t.csv", "features": [feature]}}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_a_sharing_feature_cannot_set_table_options() -> None:
    features = [
        {"name": "item", "type": "categorical"},
        {"name": "hist", "type": "sequence", "share_embedding": "item", "min_count": 5},
    ]
    with pytest.raises(ConfigError, match="set min_count or hash_buckets on 'item'"):
        parse_config({"data": {"train": "/d/t.csv", "features": features}})


def test_config_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
