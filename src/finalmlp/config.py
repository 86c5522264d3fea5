"""Reading configs: YAML -> recipes applied -> paths resolved -> validated ExperimentConfig.

Errors name the file and the dotted key, and suggest the closest valid key for a typo.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from finalmlp.data.recipes import apply_recipe
from finalmlp.errors import ConfigError
from finalmlp.schema import (
    AttentionOptions,
    CategoricalFeature,
    Condition,
    DataConfig,
    ExperimentConfig,
    FieldRange,
    FinalMLPConfig,
    HistoryOptions,
    LibsvmOptions,
    LowRankMixtureConfig,
    MLPConfig,
    ModelConfig,
    NumericFeature,
    SequenceFeature,
    SplitOptions,
    SyntheticOptions,
    TrainConfig,
)


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML config, apply its recipe, resolve relative paths, validate.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "config", "data, model, train")
    return parse_config(raw, base_dir=path.parent, origin=str(path))


def read_yaml_mapping(path: Path, what: str, keys: str) -> dict[str, Any]:
    """The mapping a YAML file holds (a ``what`` file, e.g. config or tune, with ``keys``).

    Raises:
        ConfigError: the file is missing, a directory, unreadable, not YAML or no mapping.
    """
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; pass the YAML {what} file")
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {keys}")
    return raw


def parse_config(
    raw: dict[str, Any], base_dir: Path | None = None, origin: str = "config"
) -> ExperimentConfig:
    """Validate a config given as a dict (recipes applied, paths resolved against base_dir)."""
    raw = dict(raw)
    try:
        if isinstance(raw.get("data"), dict):
            recipe = raw["data"].get("recipe")
            if recipe is not None and not isinstance(recipe, str):
                raise ConfigError(f"{origin}: data.recipe must be a name, got {recipe!r}")
            raw["data"] = apply_recipe(raw["data"])
            if base_dir is not None:
                raw["data"] = _resolve_paths(raw["data"], base_dir)
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {format_validation_error(exc)}") from None


_PATH_KEYS = ("train", "valid", "test", "cache_dir", "quarantine_dir")


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    data = dict(data)
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str | Path) and not Path(value).is_absolute():
            data[key] = str((base_dir / value).resolve())
    libsvm = data.get("libsvm")
    if isinstance(libsvm, dict) and isinstance(libsvm.get("field_map"), str | Path):
        fmap = Path(libsvm["field_map"])
        if not fmap.is_absolute():
            data["libsvm"] = {**libsvm, "field_map": str((base_dir / fmap).resolve())}
    return data


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: the dotted key, what is wrong, and a suggestion for typos."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {loc!r}{_suggest_key(err['loc'])}")
        elif err["type"] == "missing":
            lines.append(f"missing required key {loc!r}")
        elif err["type"] == "union_tag_not_found":
            tag = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
            lines.append(f"missing required key {f'{loc}.{tag}'!r}{_TAG_HINTS.get(tag, '')}")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc or 'config'}: {msg}{shown}")
    return "; ".join(lines)


_FEATURE_TAGS: dict[str, type[BaseModel]] = {
    "categorical": CategoricalFeature,
    "numeric": NumericFeature,
    "sequence": SequenceFeature,
}
_MODEL_TAGS: dict[str, type[BaseModel]] = {
    cls.model_fields["name"].default: cls for cls in get_args(get_args(ModelConfig)[0])
}
_UNION_TAGS = {**_FEATURE_TAGS, **_MODEL_TAGS}
_TAG_HINTS = {
    "type": f" (one of {', '.join(map(repr, _FEATURE_TAGS))})",
    "name": f" (one of {', '.join(map(repr, _MODEL_TAGS))})",
}


def _is_union_tag(part: object) -> bool:
    return part in _UNION_TAGS


_MODELS_BY_SECTION: dict[str, type[BaseModel]] = {
    "data": DataConfig,
    "model": FinalMLPConfig,
    "train": TrainConfig,
}


def _suggest_key(loc: tuple[int | str, ...]) -> str:
    """Find the model that owns the misspelt key and propose the closest valid key."""
    owner = _owner_model(loc[:-1])
    if owner is None:
        return ""
    valid = list(owner.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid keys: {', '.join(valid)}"


def _owner_model(parents: tuple[int | str, ...]) -> type[BaseModel] | None:
    if not parents:
        return ExperimentConfig
    last = parents[-1]
    if isinstance(last, str) and last in _UNION_TAGS:
        return _UNION_TAGS[last]
    if len(parents) == 1 and isinstance(last, str):
        return _MODELS_BY_SECTION.get(last)
    if isinstance(last, int) and len(parents) > 1:  # an item of a list: libsvm.fields[i]
        last = parents[-2]
    return _NESTED.get(str(last))


_NESTED: dict[str, type[BaseModel]] = {
    "split": SplitOptions,
    "libsvm": LibsvmOptions,
    "fields": FieldRange,
    "synthetic": SyntheticOptions,
    "mlp1": MLPConfig,
    "mlp2": MLPConfig,
    "mlp": MLPConfig,
    "low_rank_mixture": LowRankMixtureConfig,
    "block1": MLPConfig,
    "block2": MLPConfig,
    "bottom": MLPConfig,
    "expert": MLPConfig,
    "tower": MLPConfig,
    "history": HistoryOptions,
    "behaviour": Condition,
    "attention": AttentionOptions,
}
