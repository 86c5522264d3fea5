"""``finalmlp tune CONFIG --budget 10m``: the best model for a data config, no tune file.

A built-in search space over the zoo's strong models and their key settings::

    model.name        lr | finalmlp | dnn | deepfm | dcnv2 (the default trials in this order)
    learning_rate     log-uniform, the model's default (docs/models.md) / 3 .. x 3
    embedding_l2      log-uniform 1e-6 .. 0.1 (not for lr)
    batch_size        256 .. 4096 (powers of 2; at most a tenth of the training rows)
    dropout           0 .. 0.5 (deep models)
    hidden units      [400,400,400] | [400,400] | [200,200] (dnn, deepfm, dcnv2)
    num_cross_layers  2 .. 4 (dcnv2)
    num_heads         1 | 2 | 5, mlp1 [400] | [400,400] (finalmlp)

The first trials are each model at its defaults (the config's own ``model`` section when it
names one of them), so the defaults are the numbers to beat; TPE samples the rest. The data are
prepared once for every trial. The search stops at the budget: no trial starts after it, and a
trial still running then is stopped at its next validation (its partial result is not used).
It maximises validation AUC; the scores served are calibrated (Platt, the default).

Writes to OUT: ``best.yaml`` (the whole config of the best trial: ``finalmlp train`` it),
``best_run/`` (its run directory, ready to predict, serve or export), ``trials.csv``.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from finalmlp.config import load_config, parse_config
from finalmlp.data.dataset import prepare_data
from finalmlp.errors import ConfigError, FinalMLPError
from finalmlp.io import atomic_write_text
from finalmlp.schema import ExperimentConfig
from finalmlp.schema.models import MODEL_TRAIN_DEFAULTS
from finalmlp.train.records import Validation
from finalmlp.train.run import train_from_config

# LR first (a baseline in seconds), then FinalMLP (the fastest deep model here: docs/models.md),
# so a short budget compares the two before the slower models.
AUTO_MODELS = ("lr", "finalmlp", "dnn", "deepfm", "dcnv2")
HIDDEN_CHOICES = ("400-400-400", "400-400", "200-200")
BEST_RUN = "best_run"
BEST_YAML = "best.yaml"
TRIALS_CSV = "trials.csv"
Log = Callable[[str], None]


class BudgetSpent(optuna.TrialPruned):
    """The budget ran out while a trial trained: it stops, and counts as not finished."""


def parse_budget(text: str) -> float:
    """``10m``, ``90s``, ``1h``, ``1h30m`` or plain seconds -> seconds.

    Raises:
        ConfigError: anything else, or a budget of zero.
    """
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
        if not value or parts is None:
            raise ConfigError(f"--budget must look like 10m, 90s, 1h or 1h30m; got {text!r}")
        hours, minutes, secs = (int(p) if p else 0 for p in parts.groups())
        seconds = hours * 3600.0 + minutes * 60.0 + secs
    if seconds <= 0:
        raise ConfigError(f"--budget must be more than 0, got {text!r}")
    return seconds


@dataclass
class AutoTuneResult:
    """What the search did: every trial, the best, and where its config and run are."""

    out_dir: Path
    trials: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def best_yaml(self) -> Path:
        return self.out_dir / BEST_YAML

    @property
    def best_run(self) -> Path:
        return self.out_dir / BEST_RUN


def model_params(trial: optuna.Trial, name: str, train_rows: int) -> dict[str, Any]:
    """The trial's ``model`` and ``train`` sections for model ``name`` (sampled)."""
    default_lr = MODEL_TRAIN_DEFAULTS[name]["learning_rate"]
    train: dict[str, Any] = {
        "learning_rate": trial.suggest_float(
            f"{name}.lr", default_lr / 3, default_lr * 3, log=True
        ),
        "batch_size": trial.suggest_categorical(f"{name}.batch_size", batch_choices(train_rows)),
    }
    model: dict[str, Any] = {"name": name}
    if name == "lr":
        return {"model": model, "train": {**train, "embedding_l2": 0.0}}
    train["embedding_l2"] = trial.suggest_float(f"{name}.embedding_l2", 1e-6, 0.1, log=True)
    dropout = trial.suggest_float(f"{name}.dropout", 0.0, 0.5)
    if name == "finalmlp":
        mlp1 = trial.suggest_categorical("finalmlp.mlp1", ("400", "400-400"))
        model.update(
            mlp1={"hidden_units": _units(mlp1), "dropout": dropout, "batch_norm": True},
            mlp2={"hidden_units": [100], "dropout": dropout, "batch_norm": True},
            num_heads=trial.suggest_categorical("finalmlp.num_heads", (1, 2, 5)),
        )
    else:
        hidden = trial.suggest_categorical(f"{name}.hidden_units", HIDDEN_CHOICES)
        model["mlp"] = {"hidden_units": _units(hidden), "dropout": dropout, "batch_norm": True}
        if name == "dcnv2":
            model["num_cross_layers"] = trial.suggest_int("dcnv2.num_cross_layers", 2, 4)
    return {"model": model, "train": train}


def batch_choices(train_rows: int) -> tuple[int, ...]:
    """Powers of 2 from 256 to 4096, at most a tenth of the training rows (256 at least)."""
    return tuple(b for b in (256, 512, 1024, 2048, 4096) if b == 256 or b <= train_rows / 10)


def _units(text: str) -> list[int]:
    return [int(part) for part in text.split("-")]


class _AutoObjective:
    def __init__(self, base: ExperimentConfig, raw: dict[str, Any], base_dir: Path,
                 out_dir: Path, deadline: float, log: Log) -> None:  # fmt: skip
        self.base, self.raw, self.base_dir, self.out_dir = base, raw, base_dir, out_dir
        self.deadline, self.log = deadline, log
        self.prepared = prepare_data(base.data)
        self.prepared = replace(self.prepared, from_cache=True, seconds=0.0)
        self.train_rows = self.prepared.rows["train"]
        self.records: list[dict[str, Any]] = []

    def config(self, trial: optuna.Trial) -> ExperimentConfig:
        name = trial.suggest_categorical("model", AUTO_MODELS)
        sampled = model_params(trial, name, self.train_rows)
        model = sampled["model"]
        own = self.raw.get("model")
        if trial.user_attrs.get("defaults") and isinstance(own, dict) and own.get("name") == name:
            model = own  # the config's own model section: the default to beat
        train = {**dict(self.raw.get("train") or {}), **sampled["train"], "progress": False}
        raw = {"data": self.raw["data"], "model": model, "train": train}
        return parse_config(raw, base_dir=self.base_dir, origin=f"trial {trial.number}")

    def __call__(self, trial: optuna.Trial) -> float:
        started = time.monotonic()
        record: dict[str, Any] = {"trial": trial.number, "state": "FAIL"}
        self.records.append(record)
        try:
            config = self.config(trial)
            record.update(model=config.model.name, params=dict(trial.params))
            self.log(f"trial {trial.number}: {config.model.name} {_shown(trial.params)}")
            metrics = train_from_config(
                config,
                self.out_dir / "trials" / f"{trial.number:04d}",
                on_validation=self._hook(trial),
                prepared=self.prepared,
            )
        except BudgetSpent:
            record["state"] = "STOPPED"
            raise
        except optuna.TrialPruned:
            record["state"] = "PRUNED"
            raise
        except FinalMLPError as exc:
            record["note"] = str(exc)
            raise
        finally:
            record["seconds"] = time.monotonic() - started
        record.update(
            state="COMPLETE",
            valid_auc=metrics["valid"]["auc"],
            valid_logloss=metrics["valid"]["logloss"],
            test_auc=metrics["test"]["auc"],
            test_logloss=metrics["test"]["logloss"],
            epochs=metrics["epochs"],
            config=config.model_dump(mode="json"),
        )
        return float(metrics["valid"]["auc"])

    def _hook(self, trial: optuna.Trial) -> Callable[[Validation], None]:
        step = iter(range(1, 10**9))

        def on_validation(record: Validation) -> None:
            if time.monotonic() > self.deadline:
                raise BudgetSpent(f"budget spent at epoch {record.epoch}")
            trial.report(float(record.metrics["auc"]), next(step))
            if not trial.user_attrs.get("defaults") and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {record.epoch}")

        return on_validation


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k.split('.', 1)[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.', 1)[-1]}={v}"
        for k, v in params.items()
        if k != "model"
    )


def auto_tune(
    config_path: Path, out_dir: Path, budget_s: float, *, seed: int = 2023, log: Log = print
) -> AutoTuneResult:
    """Search the built-in space on ``config_path``'s data for ``budget_s`` seconds.

    Raises:
        ConfigError: an invalid config, or an ``out_dir`` holding something else.
        DataError, SchemaError: the data cannot be read as the config describes it.
    """
    started = time.monotonic()
    base = load_config(config_path)
    raw = yaml.safe_load(Path(config_path).read_text(encoding="utf-8"))
    out_dir = Path(out_dir)
    if out_dir.exists() and any(p.name not in (BEST_RUN, BEST_YAML, TRIALS_CSV, "trials")
                                for p in out_dir.iterdir()):  # fmt: skip
        raise ConfigError(f"{out_dir} holds other files; pass a new or empty --out directory")
    shutil.rmtree(out_dir / "trials", ignore_errors=True)
    objective = _AutoObjective(
        base, raw, Path(config_path).parent, out_dir, started + budget_s, log
    )
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=len(AUTO_MODELS) + 3)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=len(AUTO_MODELS), n_warmup_steps=2)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for name in AUTO_MODELS:  # each model at its defaults first
        study.enqueue_trial(_default_params(name, objective.train_rows), {"defaults": True})
    best_so_far = {"value": -math.inf}

    def keep_best(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        folder = out_dir / "trials" / f"{trial.number:04d}"
        done = trial.state == optuna.trial.TrialState.COMPLETE
        if done and trial.value is not None and trial.value > best_so_far["value"]:
            best_so_far["value"] = trial.value
            shutil.rmtree(out_dir / BEST_RUN, ignore_errors=True)
            folder.rename(out_dir / BEST_RUN)
        shutil.rmtree(folder, ignore_errors=True)
        record = objective.records[-1]
        value = f"valid AUC {record['valid_auc']:.4f}" if done else record["state"].lower()
        log(f"trial {trial.number}: {value} in {record['seconds']:.0f} s")

    try:
        study.optimize(
            objective,
            timeout=budget_s,
            catch=(FinalMLPError,),
            callbacks=[keep_best, _stop_at(started + budget_s)],
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
        shutil.rmtree(out_dir / "trials", ignore_errors=True)
    result = AutoTuneResult(out_dir, objective.records, seconds=time.monotonic() - started)
    finished = [r for r in objective.records if r["state"] == "COMPLETE"]
    if finished:
        result.best = max(finished, key=lambda r: r["valid_auc"])
        config = result.best["config"]
        config["train"].pop("progress", None)  # the trials' setting, not the user's
        text = yaml.safe_dump(config, sort_keys=False)
        atomic_write_text(
            out_dir / BEST_YAML, f"# finalmlp tune: trial {result.best['trial']}\n{text}"
        )
    _write_trials(out_dir / TRIALS_CSV, objective.records)
    return result


def _stop_at(deadline: float) -> Callable[[optuna.Study, Any], None]:
    def callback(study: optuna.Study, trial: Any) -> None:
        del trial
        if time.monotonic() > deadline:
            study.stop()

    return callback


def _default_params(name: str, train_rows: int) -> dict[str, Any]:
    """The sampled keys at the model's defaults (docs/models.md), for the enqueued trials."""
    defaults = MODEL_TRAIN_DEFAULTS[name]
    params: dict[str, Any] = {
        "model": name,
        f"{name}.lr": defaults["learning_rate"],
        f"{name}.batch_size": max(batch_choices(train_rows)),
    }
    if name != "lr":
        params[f"{name}.embedding_l2"] = max(defaults["embedding_l2"], 1e-6)
        params[f"{name}.dropout"] = {"finalmlp": 0.4, "dcnv2": 0.4}.get(name, 0.2)
    if name == "finalmlp":
        params.update({"finalmlp.mlp1": "400", "finalmlp.num_heads": 5})
    elif name != "lr":
        params[f"{name}.hidden_units"] = "400-400-400"
    if name == "dcnv2":
        params["dcnv2.num_cross_layers"] = 4
    return params


def _write_trials(path: Path, records: list[dict[str, Any]]) -> None:
    columns = ["trial", "model", "state", "valid_auc", "valid_logloss", "test_auc",
               "test_logloss", "epochs", "seconds", "params", "note"]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for record in records:
            params = yaml.safe_dump(record.get("params", {}), default_flow_style=True).strip()
            writer.writerow({**record, "params": params})
