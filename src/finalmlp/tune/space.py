"""Search space against the base config: dotted paths, up-front checks, sampling, applying.

Values are applied to the base config's *raw* YAML (so ``best.yaml`` reads like the file the
user wrote); a section or sub-section the YAML leaves to its defaults is filled in from the
validated config first, so ``model.mlp1.dropout`` keeps ``model.mlp1.hidden_units``.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from finalmlp.config import _PATH_KEYS, _resolve_paths, load_config, parse_config
from finalmlp.errors import ConfigError
from finalmlp.schema import ExperimentConfig
from finalmlp.tune.spec import CategoricalParam, FloatParam, IntParam, Param, TuneSpec, choice_label

MAX_COMBINATIONS = 512  # categorical combinations checked up front (a fixed sample beyond)


@dataclass(frozen=True)
class BaseConfig:
    """The config a search starts from: its file, raw YAML, validated form and its dump."""

    path: Path
    raw: dict[str, Any]
    config: ExperimentConfig
    values: dict[str, Any]


def load_base(spec: TuneSpec) -> BaseConfig:
    config = load_config(spec.base)  # every config error, with the base file's name
    raw = yaml.safe_load(spec.base.read_text(encoding="utf-8"))
    return BaseConfig(spec.base, raw, config, config.model_dump(mode="json"))


def get_path(tree: dict[str, Any], key: str) -> Any:
    """The value at a dotted path; KeyError when a part is missing."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def set_path(raw: dict[str, Any], key: str, value: Any, defaults: dict[str, Any]) -> None:
    """Set a dotted path in ``raw`` in place; a missing section is copied from ``defaults``."""
    *parents, leaf = key.split(".")
    node, fallback = raw, defaults
    for part in parents:
        fallback = fallback[part]
        if not isinstance(node.get(part), dict):
            node[part] = copy.deepcopy(fallback)
        node = node[part]
    node[leaf] = value


def trial_raw(base: BaseConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The base YAML with ``params`` (dotted path -> config value) applied."""
    raw = copy.deepcopy(base.raw)
    for key, value in params.items():
        set_path(raw, key, value, base.values)
    return raw


def trial_config(base: BaseConfig, params: dict[str, Any], origin: str) -> ExperimentConfig:
    """Validate the base config with ``params`` applied (ConfigError naming ``origin``)."""
    return parse_config(trial_raw(base, params), base_dir=base.path.parent, origin=origin)


def suggest(trial: optuna.Trial, space: dict[str, Param]) -> dict[str, Any]:
    """Sample every parameter; returns dotted path -> config value (lists decoded)."""
    params: dict[str, Any] = {}
    for key, param in space.items():
        if isinstance(param, FloatParam):
            params[key] = trial.suggest_float(
                key, param.low, param.high, log=param.log, step=param.step
            )
        elif isinstance(param, IntParam):
            params[key] = trial.suggest_int(
                key, param.low, param.high, log=param.log, step=param.step
            )
        else:
            params[key] = decode_choice(param, trial.suggest_categorical(key, _labels(param)))
    return params


def decode_params(space: dict[str, Param], stored: dict[str, Any]) -> dict[str, Any]:
    """Optuna's stored params (choice labels) -> config values."""
    return {
        key: decode_choice(param, stored[key])
        if isinstance(param, CategoricalParam)
        else stored[key]
        for key, param in space.items()
        if key in stored
    }


def decode_choice(param: CategoricalParam, label: Any) -> Any:
    return param.choices[_labels(param).index(label)]


def value_text(value: Any) -> str:
    """A config value as short text (lists and mappings as YAML flow text)."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _labels(param: CategoricalParam) -> list[Any]:
    return [choice_label(choice) for choice in param.choices]


def check_space(spec: TuneSpec, base: BaseConfig) -> tuple[dict[str, Any], list[str]]:
    """Check the space before any training; return the base's params (as stored) and notes.

    Raises:
        ConfigError: a key names no setting, a bound or choice can never give a valid config,
            or the base config's own value lies outside the space (trial 0 runs the base).
    """
    task, dot, metric = spec.metric.rpartition(".")
    if metric == "gauc" and base.config.data.group is None:
        raise ConfigError(
            "metric gauc needs data.group in the base config (the column to group by); "
            "use metric: auc"
        )
    if dot and task not in base.config.data.task_names:
        raise ConfigError(
            f"metric {spec.metric!r} names task {task!r}; the base config's tasks are "
            f"{base.config.data.task_names}"
        )
    base_params = {key: _base_label(key, param, base) for key, param in spec.space.items()}
    for key, param in spec.space.items():
        if not isinstance(param, CategoricalParam):
            for bound in (param.low, param.high):
                trial_config(base, {key: bound}, f"space {key!r} at {bound!r}")
    notes = _check_combinations(spec, base)
    return base_params, notes


def _base_label(key: str, param: Param, base: BaseConfig) -> Any:
    try:
        value = get_path(base.values, key)
    except KeyError:
        hint = _close(key, base)
        raise ConfigError(f"space {key!r}: the config has no such setting{hint}") from None
    where = f"space {key!r}: the base config's value {value!r}"
    fix = "; include it, so that trial 0 runs the base config (the default to beat)"
    if isinstance(param, CategoricalParam):
        labels = _labels(param)
        if choice_label(value) not in labels:
            raise ConfigError(f"{where} is not among the choices {param.choices}{fix}")
        return labels[labels.index(choice_label(value))]
    if not isinstance(value, int | float) or not param.low <= value <= param.high:
        raise ConfigError(f"{where} is outside [{param.low}, {param.high}]{fix}")
    return value


def _close(key: str, base: BaseConfig) -> str:
    close = difflib.get_close_matches(key, list(_leaf_paths(base.values)), n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


def _leaf_paths(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict):
            yield from _leaf_paths(value, f"{path}.")


def _check_combinations(spec: TuneSpec, base: BaseConfig) -> list[str]:
    """Try the categorical choices together (numbers at the base's values): a choice that no
    combination accepts is an error; some bad combinations are a note (those trials fail)."""
    space = {k: p for k, p in spec.space.items() if isinstance(p, CategoricalParam)}
    if not space:
        return []
    combos = _combinations([p.choices for p in space.values()])
    failures: list[tuple[dict[str, Any], str]] = []
    works: set[tuple[str, str]] = set()
    for combo in combos:
        params = dict(zip(space, combo, strict=True))
        try:
            trial_config(base, params, "config")
        except ConfigError as exc:
            failures.append((params, str(exc).removeprefix("config: ")))
        else:
            works.update((key, repr(value)) for key, value in params.items())
    for params, reason in failures:
        for key, choice in params.items():
            if (key, repr(choice)) not in works:
                raise ConfigError(
                    f"space {key!r}: choice {choice!r} gives no valid config: {reason}"
                )
    if not failures:
        return []
    params, reason = failures[0]
    return [
        f"{len(failures)} of {len(combos)} combinations of the categorical choices are invalid "
        f"(e.g. {params}: {reason}); such trials fail at once with the reason"
    ]


def _combinations(choices: list[list[Any]]) -> list[tuple[Any, ...]]:
    total = 1
    for options in choices:
        total *= len(options)
    if total <= MAX_COMBINATIONS:
        return list(itertools.product(*choices))
    rng = random.Random(0)
    return [tuple(rng.choice(options) for options in choices) for _ in range(MAX_COMBINATIONS)]


def best_yaml(base: BaseConfig, params: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The base YAML with ``params`` applied and data paths made relative to ``out_dir``."""
    raw = trial_raw(base, params)
    data = raw.get("data")
    if isinstance(data, dict):
        raw["data"] = _rebase_paths(data, base.path.parent, out_dir)
    return raw


def _rebase_paths(data: dict[str, Any], from_dir: Path, to_dir: Path) -> dict[str, Any]:
    resolved = _resolve_paths(data, from_dir)  # only relative paths change
    target = to_dir.resolve()
    out = dict(data)
    for key in _PATH_KEYS:
        if resolved.get(key) != data.get(key):
            out[key] = os.path.relpath(resolved[key], target)
    libsvm = resolved.get("libsvm")
    if isinstance(libsvm, dict) and libsvm != data.get("libsvm"):
        out["libsvm"] = {**libsvm, "field_map": os.path.relpath(libsvm["field_map"], target)}
    return out
