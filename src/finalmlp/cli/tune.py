"""``finalmlp tune``: hyperparameter search with Optuna (docs/tuning.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    from finalmlp.tune.results import TrialRow
    from finalmlp.tune.runner import TuneResult


def tune(
    config: Annotated[
        Path,
        typer.Argument(
            help="Tune file: base (the config to start from), metric and space; or, with "
            "--budget, an experiment config (its data section is searched for)."
        ),
    ],
    trials: Annotated[
        int, typer.Option(min=1, help="Trials in the study in all; a rerun runs the missing.")
    ] = 20,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Search folder: study.db, trials.csv, best.yaml, best_run/, report."
        ),
    ] = Path("runs/tune"),
    use_mlflow: Annotated[
        bool,
        typer.Option("--mlflow", help="Log each trial to MLflow (needs: pip install mlflow)."),
    ] = False,
    budget: Annotated[
        str | None,
        typer.Option(
            help="With a data config instead of a tune file: search the built-in space over "
            "LR, DNN, DeepFM, DCNv2 and FinalMLP for this long (10m, 90s, 1h)."
        ),
    ] = None,
) -> None:
    """Search hyperparameters with Optuna: TPE sampling, median pruning on the validation
    metric after each epoch, the base config as trial 0 (the default to beat).

    No tune file: `finalmlp tune CONFIG --budget 10m` searches a built-in space over LR, DNN,
    DeepFM, DCNv2 and FinalMLP (each at its defaults first) until the budget is spent, and
    writes OUT/best.yaml, OUT/best_run/ and OUT/trials.csv (docs/tuning.md).

    The tune file (YAML; paths relative to it):

        base: frappe_x1.yaml     # the config to start from
        metric: auc              # auc, gauc, logloss (minimised), monitor
        space:                   # dotted path into the config -> range
          model.mlp1.dropout: {type: float, low: 0.1, high: 0.5}
          train.learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3,
                                log: true}
          train.batch_size: {type: int, low: 1024, high: 8192, step: 1024}
          model.num_heads: {type: categorical, choices: [1, 2, 5, 10]}
          model.mlp1.hidden_units: {type: categorical,
                                    choices: [[400], [400, 400]]}
        sampler: {seed: 2023, n_startup_trials: 8}        # optional
        pruner: {n_startup_trials: 5, n_warmup_steps: 2}  # null: no pruning

    Rerunning the same command resumes: finished trials are kept, an
    interrupted one runs again, and only the trials missing to reach
    --trials run. Writes to OUT: study.db, trials.csv, best.yaml (train it:
    finalmlp train OUT/best.yaml), best.json, best_run/ (the best trial's
    run), best_so_far.png, importance.png, tune_report.html.
    See docs/tuning.md.
    """
    from finalmlp.cli.console import err
    from finalmlp.tune import run_tune

    if budget is not None:
        _auto(config, out_dir, budget)
        return
    from finalmlp.tune.tracking import MlflowTracker, require_mlflow

    if use_mlflow:
        require_mlflow()  # fail before any work when it is missing
    tracking = (lambda name: MlflowTracker(f"tune {name}")) if use_mlflow else None
    try:
        result = run_tune(config, out_dir, trials, tracking=tracking)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/yellow]: rerun the same command to resume {out_dir}")
        raise typer.Exit(130) from None
    print_summary(result)


def _auto(config: Path, out_dir: Path, budget: str) -> None:
    """``--budget``: the built-in search (finalmlp.tune.auto), then the best and its files."""
    from finalmlp.cli.console import err, out
    from finalmlp.tune.auto import AUTO_MODELS, auto_tune, parse_budget

    seconds = parse_budget(budget)
    result = auto_tune(config, out_dir, seconds, log=lambda line: err.print(line, markup=False))
    done = sum(r["state"] == "COMPLETE" for r in result.trials)
    out.print(f"{len(result.trials)} trials ({done} finished) in {result.seconds:.0f} s")
    best = result.best
    if best is None:
        out.print("no trial finished within the budget: give a larger --budget")
        return
    out.print(
        f"best: trial {best['trial']}, {best['model']}: valid AUC {best['valid_auc']:.4f} "
        f"logloss {best['valid_logloss']:.4f}, test AUC {best['test_auc']:.4f} "
        f"logloss {best['test_logloss']:.4f}",
        markup=False,
    )
    models = {r["model"] for r in result.trials if r["state"] == "COMPLETE"}
    if len(models) < len(AUTO_MODELS):
        missing = ", ".join(m for m in AUTO_MODELS if m not in models)
        out.print(
            f"[yellow]note:[/yellow] no trial of {missing} finished within the budget, so the "
            "best is among the others: give a larger --budget to compare every model"
        )
    out.print(f"its run: {result.best_run}; its config: {result.best_yaml}", markup=False)
    out.print(f"train it again: finalmlp train {result.best_yaml}", markup=False)


def print_summary(result: TuneResult) -> None:
    """Default against best (value and parameters), then where the outputs are."""
    from finalmlp.cli.console import out

    states = [row.state for row in result.rows]
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))
    table = Table(title=f"{result.study_name}: {len(states)} trials ({counts})")
    table.add_column("")
    for label in ("default", "best"):
        table.add_column(label, justify="right")
    default, best = result.default, result.best
    table.add_row("trial", *(str(r.number) if r else "-" for r in (default, best)))
    for split in ("valid", "test"):
        key = f"{split} {result.metric}"
        table.add_row(key, *(_metric(r, split, result.metric) for r in (default, best)))
    shown = best or default
    for key in shown.params if shown else {}:
        table.add_row(key, *(_param(r, key) for r in (default, best)))
    out.print(table)
    out.print(_verdict(result))
    if best is not None:
        out.print(f"train the best: finalmlp train {result.out_dir / 'best.yaml'}")
    out.print("wrote " + ", ".join(str(p) for p in result.files))
    for note in result.notes:
        out.print(f"note: {note}")


def _metric(row: TrialRow | None, split: str, metric: str) -> str:
    """The trial's value for valid (the tuned number), the metric on the test split."""
    if row is None:
        return "-"
    value = row.value if split == "valid" else row.test.get(metric)
    return "-" if value is None else f"{value:.4f}"


def _param(row: TrialRow | None, key: str) -> str:
    from finalmlp.tune.space import value_text

    return "-" if row is None else value_text(row.params.get(key))


def _verdict(result: TuneResult) -> str:
    default, best = result.default, result.best
    if best is None:
        return "no trial completed yet"
    if default is None or default.value is None or best.value is None:
        return f"best: trial {best.number} (the default's trial has not completed)"
    if best.number == default.number:
        return "the default (base config) is still the best"
    gain = best.value - default.value
    return f"best (trial {best.number}) vs default: {gain:+.4f} valid {result.metric}"
