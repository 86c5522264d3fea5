"""One trial: sample, validate the config, train with a report after each validation, record.

Each trial trains into ``OUT/trials/NNNN`` (a normal run directory); after the trial only the
best trial's directory is kept (see ``finalmlp.tune.results.keep_best_run``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

from finalmlp.data.dataset import PreparedData
from finalmlp.errors import FinalMLPError
from finalmlp.schema import ExperimentConfig
from finalmlp.train.records import Validation, ValidationHook
from finalmlp.train.run import train_from_config
from finalmlp.train.trainer import monitor_value
from finalmlp.tune.space import BaseConfig, suggest, trial_config, value_text
from finalmlp.tune.spec import TuneSpec
from finalmlp.tune.study import DEFAULT_ATTR, ERROR_ATTR
from finalmlp.tune.tracking import Tracker, final_metrics

TRIALS_DIR = "trials"


def trial_dir(out_dir: Path, number: int) -> Path:
    return out_dir / TRIALS_DIR / f"{number:04d}"


def metric_value(metrics: dict[str, float], metric: str, config: ExperimentConfig) -> float:
    """The tuned value of one validation: a metric (``auc``, or a task's ``income.auc``; a
    plain metric of several tasks is their mean), or the config's monitor mix."""
    if metric == "monitor":
        return monitor_value(metrics, config.train.monitor)
    return monitor_value(metrics, {metric: 1.0})


class Objective:
    """Called by ``study.optimize`` once per trial; returns the final validation value.

    Data prepared once for the base config is reused by every trial whose data section is
    the base's (all of them unless the space has ``data.*`` keys).
    """

    def __init__(
        self,
        spec: TuneSpec,
        base: BaseConfig,
        out_dir: Path,
        prepared: PreparedData | None,
        tracker: Tracker,
        log: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self.base = base
        self.out_dir = out_dir
        # Reused in memory: each trial's run records no preprocessing time of its own.
        self.prepared = prepared and replace(prepared, from_cache=True, seconds=0.0)
        self.tracker = tracker
        self.log = log

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.spec.space)
        shown = ", ".join(f"{key}={value_text(value)}" for key, value in params.items())
        default = " (the base config)" if trial.user_attrs.get(DEFAULT_ATTR) else ""
        self.log(f"trial {trial.number}{default}: {shown}")
        self.tracker.start_trial(trial.number, params)
        state, final = "FAIL", {}
        try:
            config = trial_config(self.base, params, f"trial {trial.number}")
            metrics = self._train(trial, config)
            final = final_metrics(metrics)
            state = "COMPLETE"
            return metric_value(metrics["valid"], self.spec.metric, config)
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except (FinalMLPError, torch.cuda.OutOfMemoryError) as exc:
            trial.set_user_attr(ERROR_ATTR, str(exc))  # a rerun would fail the same way
            raise
        finally:
            self.tracker.end_trial(state, final)

    def _train(self, trial: optuna.Trial, config: ExperimentConfig) -> dict[str, Any]:
        config = config.model_copy(
            update={"train": config.train.model_copy(update={"progress": False})}
        )
        same_data = config.data == self.base.config.data
        metrics = train_from_config(
            config,
            trial_dir(self.out_dir, trial.number),
            on_validation=self._hook(trial, config),
            prepared=self.prepared if same_data else None,
        )
        for key in ("epochs", "best_epoch", "valid", "test"):
            trial.set_user_attr(key, metrics[key])
        return metrics

    def _hook(self, trial: optuna.Trial, config: ExperimentConfig) -> ValidationHook:
        """Report each validation to the pruner (step = validation count, i.e. the epoch when
        validating once per epoch) and to the tracker; prune when the pruner says so. The
        base config's trial is never pruned: it is the default the best is compared with."""
        counter = itertools.count(1)
        prunable = not trial.user_attrs.get(DEFAULT_ATTR, False)

        def on_validation(record: Validation) -> None:
            step = next(counter)
            value = metric_value(record.metrics, self.spec.metric, config)
            trial.report(value, step)
            trial.set_user_attr("epochs", record.epoch)
            self.tracker.log_validation(step, record.metrics)
            if prunable and trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned at epoch {record.epoch}: valid {self.spec.metric} {value:.4f}"
                )

        return on_validation
