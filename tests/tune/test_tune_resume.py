"""Rerunning the same command resumes: finished trials are kept, a trial a killed process left
RUNNING is marked FAIL and tried again, and only the missing trials run."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState
from tune_setup import quiet, write_tune

from finalmlp.tune import run_tune
from finalmlp.tune.space import load_base
from finalmlp.tune.spec import load_tune_spec
from finalmlp.tune.study import RETRY_ATTR, STUDY_DB, study_name


def _study(out: Path) -> optuna.Study:
    storage = f"sqlite:///{out / STUDY_DB}"
    (name,) = optuna.get_all_study_names(storage=storage)
    return optuna.load_study(study_name=name, storage=storage)


def test_resume_runs_only_the_missing_trials_and_retries_an_interrupted_one(
    tmp_path: Path,
) -> None:
    tune, out = write_tune(tmp_path), tmp_path / "search"
    first = run_tune(tune, out, 2, log=quiet)
    assert first.ran == 2
    first_values = {row.number: row.value for row in first.rows}

    # A process killed mid-trial leaves it RUNNING, with the parameters it had sampled.
    _study(out).ask({"model.mlp1.dropout": optuna.distributions.FloatDistribution(0.0, 0.5)})

    second = run_tune(tune, out, 4, log=quiet)
    assert second.interrupted == [2]
    assert second.ran == 2
    trials = _study(out).get_trials()
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.FAIL,  # the killed one
        TrialState.COMPLETE,  # ... tried again with its parameters
        TrialState.COMPLETE,
    ]
    assert trials[3].user_attrs[RETRY_ATTR] == 2
    assert trials[3].params["model.mlp1.dropout"] == trials[2].params["model.mlp1.dropout"]
    assert {t.number: t.value for t in trials[:2]} == first_values  # kept, not rerun
    assert not any(t.state == TrialState.RUNNING for t in trials)

    third = run_tune(tune, out, 4, log=quiet)  # nothing missing: only the outputs again
    assert third.ran == 0 and third.interrupted == []
    assert len(_study(out).get_trials()) == 5
    assert (out / "best.yaml").is_file()
    assert third.best is not None and third.best_run_trial == third.best.number


def test_the_study_name_ignores_settings_that_only_change_how_trials_run(
    tmp_path: Path,
) -> None:
    def name(**train: object) -> str:
        spec = load_tune_spec(write_tune(tmp_path, train=dict(train)))
        return study_name(spec, load_base(spec))

    plain = name()
    assert plain.startswith("base-")
    assert name(num_threads=2, device="cpu", progress=True, eval_batch_size=512) == plain
    assert name(learning_rate=2.0e-3) != plain  # another base config: another search
