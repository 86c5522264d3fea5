"""The Optuna study on disk: SQLite storage, a fixed name, and resuming after an interruption.

Rerunning the same command with the same ``--out`` resumes: finished trials are kept, a trial
left RUNNING by a killed process (or stopped by Ctrl-C) is marked FAIL and its parameters are
tried again, and only the trials still missing to reach ``--trials`` run. One process per
output directory (a lock file enforces it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from finalmlp.errors import ConfigError
from finalmlp.tune.space import BaseConfig
from finalmlp.tune.spec import TuneSpec

STUDY_DB = "study.db"
LOCK_FILE = ".tune.lock"
# Set by the objective on a trial that failed for a reason a rerun would not fix (an invalid
# combination, a diverging loss); a FAIL without it was interrupted and is tried again.
ERROR_ATTR = "error"
DEFAULT_ATTR = "default"  # the base config's own values (trial 0): the default to beat
RETRY_ATTR = "retry_of"


# Settings that change where and how fast a trial runs, not its result: a search may resume on
# another device, with other threads or without the progress bar.
_RUN_ONLY = {
    "data": ("cache_dir",),
    "train": ("progress", "num_threads", "device", "eval_batch_size", "distributed_timeout_s"),
}


def study_name(spec: TuneSpec, base: BaseConfig) -> str:
    """The base file's stem and a hash of what defines the search (metric, space, base)."""
    config = base.config.model_dump(mode="json")
    for section, keys in _RUN_ONLY.items():
        for key in keys:
            config[section].pop(key, None)
    what = {
        "metric": spec.metric,
        "space": {k: p.model_dump(mode="json") for k, p in spec.space.items()},
        "base": config,
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]
    return f"{spec.base.stem}-{digest}"


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.tune.lock`` for the duration: a second search there fails at once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "w", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another `finalmlp tune` is running in {out_dir}; wait for it or pass "
                "another --out"
            ) from None
        yield


def open_study(
    spec: TuneSpec,
    base: BaseConfig,
    out_dir: Path,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create or load the study in ``out_dir/study.db``.

    Raises:
        ConfigError: the database holds a search of another space, metric or base config.
    """
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out_dir / STUDY_DB).resolve()}")
    name = study_name(spec, base)
    existing = optuna.get_all_study_names(storage=storage)
    if existing and name not in existing:
        raise ConfigError(
            f"{out_dir / STUDY_DB} holds another search ({', '.join(existing)}): the space, "
            f"metric or base config changed; pass a new --out (or delete {out_dir})"
        )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=spec.direction,
        pruner=pruner or _pruner(spec),
        load_if_exists=True,
    )
    # A fresh seed per invocation (seed + trials so far): a resumed search does not replay
    # the first invocation's random startup points.
    study.sampler = optuna.samplers.TPESampler(
        seed=spec.sampler.seed + len(study.get_trials(deepcopy=False)),
        n_startup_trials=spec.sampler.n_startup_trials,
    )
    return study


def _pruner(spec: TuneSpec) -> optuna.pruners.BasePruner:
    if spec.pruner is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.pruner.n_startup_trials,
        n_warmup_steps=spec.pruner.n_warmup_steps,
    )


def prepare_trials(study: optuna.Study, base_params: dict[str, Any]) -> list[int]:
    """Enqueue the base config as trial 0 of a new study; mark trials left RUNNING as FAIL and
    enqueue every interrupted trial again. Returns the numbers of the interrupted trials."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        study.enqueue_trial(base_params, user_attrs={DEFAULT_ATTR: True})
        return []
    storage = study._storage  # no public way to fail a trial another process left RUNNING
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    interrupted = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if ERROR_ATTR not in t.user_attrs and t.number not in retried
    ]
    for trial in interrupted:
        attrs: dict[str, Any] = {RETRY_ATTR: trial.number}
        if trial.user_attrs.get(DEFAULT_ATTR):
            attrs[DEFAULT_ATTR] = True
        study.enqueue_trial(trial.params, user_attrs=attrs)
    return [t.number for t in interrupted]


def counts_toward_total(trial: FrozenTrial) -> bool:
    """Finished for good: complete, pruned, or failed for a reason a rerun would not fix."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and ERROR_ATTR in trial.user_attrs


def remaining_trials(study: optuna.Study, total: int) -> int:
    done = sum(counts_toward_total(t) for t in study.get_trials(deepcopy=False))
    return max(total - done, 0)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial (lowest number on ties), or None."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(complete, key=lambda t: (sign * trial_value(t), t.number))


def trial_value(trial: FrozenTrial) -> float:
    return float("nan") if trial.value is None else float(trial.value)


def default_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete trial that ran the base config, or None."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get(DEFAULT_ATTR):
            return trial
    return None
