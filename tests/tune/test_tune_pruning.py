"""Pruning: the trainer's validation hook stops training; a pruned trial is recorded as such;
the base config's trial is never pruned; an invalid combination fails alone, with its reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState
from tune_setup import SPACE, quiet, write_tune

from finalmlp.data.dataset import EncodedSplit
from finalmlp.errors import FinalMLPError
from finalmlp.features.processor import EncodedFeatures
from finalmlp.layout import FieldLayout
from finalmlp.models import build_model
from finalmlp.schema import LRConfig, TrainConfig
from finalmlp.train.records import Validation
from finalmlp.train.trainer import Trainer
from finalmlp.tune import run_tune
from finalmlp.tune.objective import Objective
from finalmlp.tune.space import load_base
from finalmlp.tune.spec import load_tune_spec
from finalmlp.tune.study import ERROR_ATTR, counts_toward_total, open_study
from finalmlp.tune.tracking import NullTracker


class Stop(Exception):
    pass


def _split(num_rows: int, seed: int) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    user = rng.integers(2, 10, (num_rows, 1)).astype(np.int32)
    features = EncodedFeatures(user, np.zeros((num_rows, 0), np.float32), ())
    return EncodedSplit(features, (user[:, 0] <= 4).astype(np.float32))


def test_the_validation_hook_sees_each_validation_and_can_stop_training() -> None:
    layout = FieldLayout(
        table_sizes=(10,), categorical_fields=("user",), categorical_tables=(0,), numeric_fields=()
    )
    torch.manual_seed(0)
    config = TrainConfig(batch_size=16, max_epochs=5, patience=100, progress=False)
    seen: list[Validation] = []

    def hook(record: Validation) -> None:
        seen.append(record)
        if record.epoch == 1:
            raise Stop

    trainer = Trainer(build_model(layout, LRConfig()), config, on_validation=hook)
    with pytest.raises(Stop):
        trainer.fit(_split(64, 0), _split(32, 1))
    assert [r.epoch for r in seen] == [1]  # stopped at the first validation, not after 5
    assert set(seen[0].metrics) >= {"auc", "logloss"}


class PruneAlways(optuna.pruners.BasePruner):
    """Prunes every trial at its first report."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return bool(trial.intermediate_values)


def test_a_pruned_trial_stops_after_epoch_1_but_the_default_runs_in_full(tmp_path: Path) -> None:
    tune = write_tune(tmp_path, train={"max_epochs": 3})
    result = run_tune(tune, tmp_path / "search", 3, pruner=PruneAlways(), log=quiet)
    default, *others = result.rows
    assert default.default and default.state == "COMPLETE" and default.epochs == 3
    assert [(r.state, r.epochs) for r in others] == [("PRUNED", 1), ("PRUNED", 1)]
    assert others[0].note == "pruned after validation 1"
    assert others[0].last_report is not None
    assert result.best is not None and result.best.number == 0


def test_an_invalid_combination_fails_alone_with_its_reason(tmp_path: Path) -> None:
    space = {
        "model.num_heads": {"type": "categorical", "choices": [2, 4]},
        "model.mlp2.hidden_units": {"type": "categorical", "choices": [[16], [6]]},
    }
    spec = load_tune_spec(write_tune(tmp_path, space))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"model.num_heads": 4, "model.mlp2.hidden_units": "[6]"})
    objective = Objective(spec, load_base(spec), tmp_path / "out", None, NullTracker(), quiet)
    study.optimize(objective, n_trials=1, catch=(FinalMLPError,))
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL
    assert "trial 0: model: num_heads=4 must divide" in trial.user_attrs[ERROR_ATTR]
    assert counts_toward_total(trial)  # not retried on resume: it would fail the same way


def test_the_median_pruner_is_configured_from_the_tune_file(tmp_path: Path) -> None:
    spec = load_tune_spec(
        write_tune(tmp_path, SPACE, pruner={"n_startup_trials": 3, "n_warmup_steps": 1})
    )
    (tmp_path / "out").mkdir()
    study = open_study(spec, load_base(spec), tmp_path / "out")
    assert isinstance(study.pruner, optuna.pruners.MedianPruner)
    assert study.pruner._n_startup_trials == 3 and study.pruner._n_warmup_steps == 1
    spec = load_tune_spec(write_tune(tmp_path, SPACE, pruner=None))
    (tmp_path / "out2").mkdir()
    study = open_study(spec, load_base(spec), tmp_path / "out2")
    assert isinstance(study.pruner, optuna.pruners.NopPruner)
