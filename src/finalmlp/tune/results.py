"""What a search leaves in OUT: trials.csv, best.yaml, best.json, best_run/.

``best.yaml`` is the base config with the best trial's values, data paths relative to OUT:
``finalmlp train OUT/best.yaml`` reproduces the best trial. ``best_run/`` is that trial's run
directory (only the best trial's directory is kept while searching, so disk use stays at one
run); ``best.json`` records the default and best values and which trial ``best_run`` holds.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from finalmlp.bundle import json_safe
from finalmlp.io import atomic_write_text
from finalmlp.tune.objective import TRIALS_DIR, trial_dir
from finalmlp.tune.space import BaseConfig, best_yaml, decode_params, value_text
from finalmlp.tune.spec import TuneSpec
from finalmlp.tune.study import DEFAULT_ATTR, ERROR_ATTR, best_trial, default_trial

BEST_RUN = "best_run"


@dataclass(frozen=True)
class TrialRow:
    """One trial as reported: decoded params, outcome, and a note (why pruned or failed)."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    epochs: int | None
    seconds: float | None
    default: bool
    note: str = ""
    last_report: float | None = None  # the last value reported to the pruner
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)


def trial_row(trial: FrozenTrial, spec: TuneSpec) -> TrialRow:
    attrs = trial.user_attrs
    note = str(attrs.get(ERROR_ATTR, ""))
    reports = trial.intermediate_values
    last = reports[max(reports)] if reports else None
    if trial.state == TrialState.PRUNED:
        note = f"pruned after validation {max(reports)}" if reports else "pruned"
    elif trial.state == TrialState.FAIL and not note:
        note = "interrupted; tried again on resume"
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        value=trial.value,
        params=decode_params(spec.space, trial.params),
        epochs=attrs.get("epochs"),
        seconds=trial.duration.total_seconds() if trial.duration else None,
        default=bool(attrs.get(DEFAULT_ATTR, False)),
        note=note,
        last_report=last,
        valid=dict(attrs.get("valid", {})),
        test=dict(attrs.get("test", {})),
    )


def trial_rows(study: optuna.Study, spec: TuneSpec) -> list[TrialRow]:
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    return [trial_row(t, spec) for t in finished]


def write_trials_csv(path: Path, rows: list[TrialRow], spec: TuneSpec) -> None:
    """One line per finished trial: number, state, value, default, epochs, seconds, each
    parameter (lists as YAML flow text), note."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["number", "state", "value", "default", "epochs", "seconds", *spec.space, "note"]
    )
    for row in rows:
        params = [_csv_text(row.params.get(key)) for key in spec.space]
        seconds = f"{row.seconds:.1f}" if row.seconds is not None else ""
        value = "" if row.value is None else f"{row.value:.6f}"
        cells = [row.number, row.state, value, row.default, row.epochs or "", seconds]
        writer.writerow([*cells, *params, row.note])
    atomic_write_text(path, buffer.getvalue())


def _csv_text(value: Any) -> str:
    return value_text(value) if isinstance(value, list | dict) or value is None else str(value)


def keep_best_run(study: optuna.Study, out_dir: Path) -> None:
    """Delete every trial directory but the best complete trial's (and its checkpoints)."""
    folder = out_dir / TRIALS_DIR
    if not folder.is_dir():
        return
    best = best_trial(study)
    keep = trial_dir(out_dir, best.number) if best is not None else None
    for path in folder.iterdir():
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)
    if keep is not None:
        shutil.rmtree(keep / "checkpoints", ignore_errors=True)


def promote_best_run(study: optuna.Study, out_dir: Path) -> int | None:
    """Move the best trial's directory to OUT/best_run; the trial number best_run holds."""
    best = best_trial(study)
    source = trial_dir(out_dir, best.number) if best is not None else None
    target = out_dir / BEST_RUN
    if best is not None and source is not None and (source / "manifest.json").is_file():
        if target.exists():
            shutil.rmtree(target)
        os.replace(source, target)
        return best.number
    return _previous_best_run(out_dir) if target.is_dir() else None


def _previous_best_run(out_dir: Path) -> int | None:
    path = out_dir / "best.json"
    if not path.is_file():
        return None
    number = json.loads(path.read_text(encoding="utf-8")).get("best_run_trial")
    return number if isinstance(number, int) else None


def write_best(
    study: optuna.Study, spec: TuneSpec, base: BaseConfig, out_dir: Path, best_run: int | None
) -> None:
    """best.yaml (when a trial completed) and best.json."""
    best, default = best_trial(study), default_trial(study)
    summary: dict[str, Any] = {
        "study": study.study_name,
        "metric": spec.metric,
        "direction": spec.direction,
        "counts": _counts(study),
        "default": _brief(default, spec),
        "best": _brief(best, spec),
        "best_run_trial": best_run,
    }
    atomic_write_text(out_dir / "best.json", json.dumps(json_safe(summary), indent=2))
    if best is None:
        return
    params = decode_params(spec.space, best.params)
    raw = best_yaml(base, params, out_dir)
    header = (
        f"# Best of {summary['counts']['COMPLETE']} complete trials of study "
        f"{study.study_name}: trial {best.number}, valid {spec.metric} {best.value:.6f}\n"
        f"# Base: {base.path}. Train: finalmlp train {out_dir / 'best.yaml'} --out runs/best\n"
    )
    text = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=100)
    atomic_write_text(out_dir / "best.yaml", header + text)


def _counts(study: optuna.Study) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def _brief(trial: FrozenTrial | None, spec: TuneSpec) -> dict[str, Any] | None:
    if trial is None:
        return None
    row = trial_row(trial, spec)
    return {
        "trial": row.number,
        "value": row.value,
        "params": row.params,
        "epochs": row.epochs,
        "valid": row.valid,
        "test": row.test,
    }
