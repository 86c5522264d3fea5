"""Run a whole benchmark and keep its tables current after every run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from finalmlp.bench.leaderboard import markdown, plot_auc, summarize, write_csv
from finalmlp.bench.runner import BenchEntry, plan_runs, run_one
from finalmlp.io import atomic_write_text
from finalmlp.schema import ExperimentConfig


def run_benchmark(
    entries: list[BenchEntry],
    seeds: int,
    out: Path,
    runs_dir: Path,
    train: Callable[[ExperimentConfig, Path], dict[str, Any]],
    published: dict[str, dict[str, Any]] | None = None,
    command: str = "finalmlp bench",
    log: Callable[[str], None] = print,
    num_threads: int | None = None,
) -> list[dict[str, Any]]:
    """Train every entry x seed (reusing finished runs); rewrite the tables after each run.

    Writes ``leaderboard.csv`` (one row per run), ``leaderboard.md`` (mean +/- std per model,
    with the published figures beside when given) and ``auc.png`` to ``out``.
    """
    out.mkdir(parents=True, exist_ok=True)
    plan = list(plan_runs(entries, seeds))
    rows: list[dict[str, Any]] = []
    for i, (entry, seed) in enumerate(plan, start=1):
        run_dir = runs_dir / entry.label / f"seed{seed}"
        row, reused = run_one(entry, seed, run_dir, train, num_threads)
        rows.append(row)
        how = "finished earlier" if reused else f"{row['train_seconds']:.0f} s"
        log(
            f"[{i}/{len(plan)}] {entry.label} seed {seed}: test AUC {row['test_auc']:.4f} "
            f"logloss {row['test_logloss']:.4f}, {row['epochs']} epochs ({how})"
        )
        write_tables(out, rows, published, command, title=_title(out))
    return rows


def write_tables(
    out: Path,
    rows: list[dict[str, Any]],
    published: dict[str, dict[str, Any]] | None,
    command: str,
    title: str,
) -> None:
    summary = summarize(rows)
    write_csv(out / "leaderboard.csv", rows)
    atomic_write_text(out / "leaderboard.md", markdown(summary, published, command, title))
    plot_auc(out / "auc.png", summary, published)


def _title(out: Path) -> str:
    return f"Benchmark: {out.name}"
