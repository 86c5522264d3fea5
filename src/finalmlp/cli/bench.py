"""``finalmlp bench``: the model zoo on one dataset, several seeds, tables and plot."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from finalmlp.errors import ConfigError


def parse_weights(text: str, option: str) -> dict[str, float]:
    """``'a=1,b.auc=-0.5'`` -> ``{"a": 1.0, "b.auc": -0.5}``.

    Raises:
        ConfigError: an item that is not ``key=number``.
    """
    weights = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            weights[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"{option}: {item.strip()!r} is not KEY=WEIGHT; e.g. 'income.auc=1,auc=0.5'"
            ) from None
    return weights


def bench(
    data: Annotated[
        Path, typer.Option("--data", help="Config whose data section every model uses.")
    ],
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated: model names (config <data stem>_<name>.yaml beside --data, "
            "else defaults) or YAML paths."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the tables and plot go.")],
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per model: train.seed + 0..N-1.")] = 3,
    runs_dir: Annotated[
        Path | None, typer.Option("--runs", help="Run directories (default: OUT/runs).")
    ] = None,
    num_threads: Annotated[
        int | None,
        typer.Option(min=1, help="Override train.num_threads (results are reused across it)."),
    ] = None,
    published: Annotated[
        Path | None,
        typer.Option(help="YAML of published figures (model: {auc, logloss, source})."),
    ] = None,
    monitor: Annotated[
        str | None,
        typer.Option(
            help="Replace every model's train.monitor, e.g. 'income.auc=1,never_married.auc=1' "
            "(task-weighted) or 'auc=1,logloss=-1'."
        ),
    ] = None,
) -> None:
    """Train every model x seed (finished runs are reused: rerun to resume), then write
    leaderboard.csv, leaderboard.md (mean ± std per model) and auc.png."""
    from finalmlp.bench.runner import load_published, resolve_entries, with_monitor
    from finalmlp.bench.suite import run_benchmark
    from finalmlp.cli.console import out
    from finalmlp.train.checkpoint import INDEX as CHECKPOINT_INDEX
    from finalmlp.train.run import train_from_config

    names = [m.strip() for m in models.split(",") if m.strip()]
    if not names:
        raise ConfigError("--models is empty; e.g. --models lr,deepfm,finalmlp")
    entries = resolve_entries(data, names)
    if monitor is not None:
        entries = with_monitor(entries, parse_weights(monitor, "--monitor"))
    for entry in entries:
        out.print(f"{entry.label}: {entry.source}")
    reference = load_published(published) if published is not None else None

    def train(config: Any, run_dir: Path) -> dict[str, Any]:
        # Resume only a run that was interrupted: a fresh one has no checkpoint to look for.
        resume = (run_dir / "checkpoints" / CHECKPOINT_INDEX).is_file()
        return train_from_config(config, run_dir, resume=resume)

    command = "finalmlp bench " + shlex.join(sys.argv[2:])
    run_benchmark(
        entries,
        seeds,
        out_dir,
        runs_dir if runs_dir is not None else out_dir / "runs",
        train,
        published=reference,
        command=command,
        log=out.print,
        num_threads=num_threads,
    )
    out.print(f"tables written to {out_dir}")
