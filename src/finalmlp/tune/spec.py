"""The tune file: which config to start from, what to maximise, and the search space.

A tune file is YAML validated once into :class:`TuneSpec` (``extra="forbid"``)::

    base: frappe_x1.yaml          # the config to start from (relative to this file)
    metric: auc                   # validation metric: auc, gauc, logloss (minimised), monitor,
                                  # or one task's: income.auc (several tasks: plain = mean)
    sampler: {seed: 2023, n_startup_trials: 8}      # TPE; optional
    pruner: {n_startup_trials: 5, n_warmup_steps: 2}  # median pruning; null turns it off
    space:                        # dotted path into the config -> distribution
      model.mlp1.dropout: {type: float, low: 0.1, high: 0.5}
      train.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      model.num_heads: {type: categorical, choices: [1, 2, 5, 10]}
      model.mlp1.hidden_units: {type: categorical, choices: [[400], [400, 400]]}
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from finalmlp.config import read_yaml_mapping
from finalmlp.errors import ConfigError

TUNE_METRICS = ("auc", "gauc", "logloss", "monitor")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FloatParam(_Strict):
    """A float in ``[low, high]``; ``log`` samples the exponent, ``step`` a grid."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be used together; remove one")
        return self


class IntParam(_Strict):
    """An integer in ``[low, high]`` (both included), every ``step``; ``log`` for wide ranges."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("log needs step 1; remove one of them")
        return self


class CategoricalParam(_Strict):
    """One of ``choices``: numbers, strings, booleans, or lists such as ``[400, 400]``."""

    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        labels = [choice_label(c) for c in self.choices]
        if len(set(labels)) != len(labels):
            raise ValueError(f"choices repeat a value: {self.choices}")
        return self


def _check_range(low: float, high: float, log: bool) -> None:
    if low >= high:
        raise ValueError(f"low must be below high, got low={low} and high={high}")
    if log and low <= 0:
        raise ValueError(f"log needs low > 0, got low={low}")


def choice_label(choice: Any) -> Any:
    """Optuna stores scalar choices; a list or mapping choice is stored as its YAML flow text."""
    if choice is None or isinstance(choice, bool | int | float | str):
        return choice
    return yaml.safe_dump(choice, default_flow_style=True, width=10_000).strip()


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SamplerSpec(_Strict):
    """TPE: ``n_startup_trials`` random trials first (the enqueued base config counts)."""

    seed: int = 2023
    n_startup_trials: int = Field(8, ge=0)


class PrunerSpec(_Strict):
    """Median pruning on the validation metric after each epoch: a trial stops when its value
    is worse than the median of earlier trials at the same epoch. Only after
    ``n_startup_trials`` finished trials, and never before epoch ``n_warmup_steps``."""

    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(2, ge=0)


class TuneSpec(_Strict):
    base: Path
    metric: str = "auc"
    space: dict[str, Param] = Field(min_length=1)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec | None = PrunerSpec()

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        task, dot, metric = value.rpartition(".")
        if metric not in TUNE_METRICS or (dot and (not task or metric == "monitor")):
            raise ValueError(
                f"metric must be one of {list(TUNE_METRICS)} or a task's <task>.auc, "
                f"<task>.logloss or <task>.gauc; got {value!r}"
            )
        return value

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "minimize" if self.metric.endswith("logloss") else "maximize"


def load_tune_spec(path: str | Path) -> TuneSpec:
    """Read and validate a tune file; ``base`` is resolved against the file's folder.

    Raises:
        ConfigError: naming the file and the offending key.
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "tune", "base, metric, space")
    if "base" not in raw and {"data", "model", "train"} & set(raw):
        raise ConfigError(
            f"{path} is an experiment config; `finalmlp tune` takes a tune file with "
            "base (this config), metric and space (see docs/tuning.md), or the config with "
            "--budget 10m to search the built-in space"
        )
    try:
        spec = TuneSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_spec_error(exc)}") from None
    if not spec.base.is_absolute():
        spec = spec.model_copy(update={"base": (path.parent / spec.base).resolve()})
    return spec


_TAGS: dict[str, type[BaseModel]] = {
    "float": FloatParam,
    "int": IntParam,
    "categorical": CategoricalParam,
}
_SECTIONS: dict[str, type[BaseModel]] = {"sampler": SamplerSpec, "pruner": PrunerSpec}


def format_spec_error(exc: ValidationError) -> str:
    """One clause per problem, naming the key (``space 'model.x': ...``) and a fix for typos."""
    return "; ".join(_format_one(err) for err in exc.errors())


def _format_one(err: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    owner: type[BaseModel] = TuneSpec
    if loc[:1] == ["space"] and len(loc) > 1:
        where = f"space {loc[1]!r}"
        rest = loc[2:]
        if rest and rest[0] in _TAGS:
            owner = _TAGS[rest.pop(0)]
    else:
        where, rest = "", loc
        if rest and rest[0] in _SECTIONS:
            owner = _SECTIONS[rest[0]]
    key = ".".join(rest)
    prefix = f"{where}: " if where else ""
    if err["type"] == "extra_forbidden":
        return f"{prefix}unknown key {key!r}{_suggest(rest[-1], owner)}"
    if err["type"] == "missing":
        return f"{prefix}missing required key {key!r}"
    if err["type"] == "union_tag_not_found":
        return f"{prefix}missing key 'type' (one of {', '.join(map(repr, _TAGS))})"
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{prefix}{key + ': ' if key else ''}{msg}{shown}"


def _suggest(name: str, owner: type[BaseModel]) -> str:
    valid = list(owner.model_fields)
    close = difflib.get_close_matches(name, valid, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
