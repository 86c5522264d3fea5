"""``run_tune``: check the space, open (or resume) the study, run the missing trials, write
trials.csv, best.yaml, best.json, best_run/ and the report."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from finalmlp.data.dataset import prepare_data
from finalmlp.errors import ConfigError, FinalMLPError
from finalmlp.train.progress import console
from finalmlp.tune.objective import TRIALS_DIR, Objective
from finalmlp.tune.report import write_report
from finalmlp.tune.results import (
    TrialRow,
    keep_best_run,
    promote_best_run,
    trial_row,
    trial_rows,
    write_best,
    write_trials_csv,
)
from finalmlp.tune.space import BaseConfig, check_space, load_base
from finalmlp.tune.spec import TuneSpec, load_tune_spec
from finalmlp.tune.study import (
    best_trial,
    default_trial,
    locked,
    open_study,
    prepare_trials,
    remaining_trials,
)
from finalmlp.tune.tracking import NullTracker, Tracker

Log = Callable[[str], None]
TRIALS_CSV = "trials.csv"


def print_line(message: str) -> None:
    """To stderr, as training logs; no Rich markup (values such as ``[400, 400]`` are text)."""
    console.print(message, markup=False)


@dataclass(frozen=True)
class TuneResult:
    """What a ``run_tune`` call did and where the search stands."""

    out_dir: Path
    study_name: str
    metric: str
    ran: int  # trials run by this call
    interrupted: list[int]  # trials of an earlier call that were stopped, tried again
    rows: list[TrialRow]
    default: TrialRow | None
    best: TrialRow | None
    best_run_trial: int | None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_tune(
    tune_file: Path,
    out_dir: Path,
    trials: int,
    tracking: Callable[[str], Tracker] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    log: Log = print_line,
) -> TuneResult:
    """Run the search of ``tune_file`` until ``out_dir`` holds ``trials`` finished trials.

    Args:
        tracking: makes the tracker from the study name (e.g. ``MlflowTracker``).
        pruner: replaces the tune file's pruner (tests).

    Raises:
        ConfigError: a bad tune file, space or base config (before any training), or
            ``out_dir`` holding another search.
    """
    if trials < 1:
        raise ConfigError(f"--trials must be 1 or more, got {trials}")
    spec = load_tune_spec(tune_file)
    base = load_base(spec)
    try:
        base_params, notes = check_space(spec, base)
    except ConfigError as exc:
        raise ConfigError(f"{tune_file}: {exc}") from None
    for note in notes:
        log(f"note: {note}")
    with locked(out_dir), _quiet_optuna():
        study = open_study(spec, base, out_dir, pruner)
        tracker = tracking(study.study_name) if tracking is not None else NullTracker()
        search = _Search(study, spec, base, out_dir, tracker, log)
        with contextlib.closing(tracker):
            interrupted = prepare_trials(study, base_params)
            if interrupted:
                log(f"trials {interrupted} were interrupted: trying their parameters again")
            remaining = remaining_trials(study, trials)
            log(f"study {study.study_name} in {out_dir}: {trials - remaining} of {trials} done")
            if remaining:
                search.optimize(remaining)
            return search.finish(remaining, interrupted, notes)


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's own log lines off (ours say the same, one line per trial), then restored."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


@dataclass(frozen=True)
class _Search:
    study: optuna.Study
    spec: TuneSpec
    base: BaseConfig
    out_dir: Path
    tracker: Tracker
    log: Log

    def optimize(self, trials: int) -> None:
        """Prepare the data once, then run ``trials`` trials (enqueued ones first)."""
        prepared = prepare_data(self.base.config.data)  # the trials with the same data reuse it
        source = "cache" if prepared.from_cache else "raw files"
        self.log(f"data prepared once for all trials, from {source} in {prepared.seconds:.1f} s")
        objective = Objective(self.spec, self.base, self.out_dir, prepared, self.tracker, self.log)
        self.study.optimize(
            objective,
            n_trials=trials,
            catch=(FinalMLPError, torch.cuda.OutOfMemoryError),
            callbacks=[self.after_trial],
        )

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """One line per trial; keep only the best run; trials.csv current while searching."""
        self.log(_trial_line(study, trial, self.spec))
        keep_best_run(study, self.out_dir)
        write_trials_csv(self.out_dir / TRIALS_CSV, trial_rows(study, self.spec), self.spec)

    def finish(self, ran: int, interrupted: list[int], notes: list[str]) -> TuneResult:
        """best_run/, best.yaml, best.json, trials.csv and the report."""
        study, spec, out_dir = self.study, self.spec, self.out_dir
        best_run = promote_best_run(study, out_dir)
        with contextlib.suppress(OSError):
            (out_dir / TRIALS_DIR).rmdir()  # empty once the best run moved out
        write_best(study, spec, self.base, out_dir, best_run)
        rows = trial_rows(study, spec)
        write_trials_csv(out_dir / TRIALS_CSV, rows, spec)
        best, default = best_trial(study), default_trial(study)
        chosen = (
            trial_row(default, spec) if default else None,
            trial_row(best, spec) if best else None,
        )
        files, report_notes = write_report(out_dir, study, rows, chosen, spec.metric)
        files = [out_dir / TRIALS_CSV, out_dir / "best.json", *files]
        if best is not None:
            files.insert(1, out_dir / "best.yaml")
        self.tracker.log_files(files)
        return TuneResult(
            out_dir,
            study.study_name,
            spec.metric,
            ran,
            interrupted,
            rows,
            *chosen,
            best_run,
            files,
            notes + report_notes,
        )


def _trial_line(study: optuna.Study, trial: FrozenTrial, spec: TuneSpec) -> str:
    row = trial_row(trial, spec)
    if trial.state == TrialState.COMPLETE:
        best = best_trial(study)
        best_text = f"; best {best.value:.4f} (trial {best.number})" if best else ""
        return (
            f"trial {row.number}: valid {spec.metric} {row.value:.4f} after {row.epochs} "
            f"epochs, {row.seconds or 0:.0f} s{best_text}"
        )
    if trial.state == TrialState.PRUNED:
        last = f" ({row.last_report:.4f})" if row.last_report is not None else ""
        return f"trial {row.number}: pruned at epoch {row.epochs}{last}"
    return f"trial {row.number}: failed: {row.note}"
