"""``finalmlp select``: OptFS feature-set selection (docs/selection.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table


def select(
    config: Annotated[Path, typer.Argument(help="YAML config (data, model, train, select).")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Run directory of the selected model to write.")
    ] = Path("runs/selected"),
    level: Annotated[
        str | None,
        typer.Option(help="value (a gate per feature value, OptFS) or field (per field)."),
    ] = None,
    keep_fraction: Annotated[
        float | None,
        typer.Option(
            "--keep-fraction", help="Budget: tune the sparsity until about this fraction is kept."
        ),
    ] = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip writing --out/report.html.")
    ] = False,
) -> None:
    """Learn which features to keep (OptFS, Lyu et al. WWW 2023) and retrain on them.

    Trains the full model, searches gates on every feature value (or field) with a growing
    temperature and a sparsity penalty, makes them binary, rewinds and retrains the model on
    the kept set. OUT is a normal run directory (evaluate, predict, export, serve, report),
    with selection.json (per field kept/total, sizes, full vs selected metrics) and
    selected.yaml (the config without the dropped fields).
    """
    from finalmlp.config import load_config
    from finalmlp.errors import ConfigError
    from finalmlp.select import select_from_config

    if level is not None and level not in ("value", "field"):
        raise ConfigError(f"--level must be value or field, got {level!r}")
    cfg = load_config(config)
    if not sys.stderr.isatty():
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"progress": False})})
    report = select_from_config(cfg, out_dir, level=level, keep_fraction=keep_fraction)
    print_selection(report, out_dir)
    if not no_report:
        from finalmlp.cli.report import report_after_training

        report_after_training(out_dir)


def print_selection(report: dict[str, Any], out_dir: Path) -> None:
    """The per-field table, then sizes and metrics before and after."""
    from finalmlp.cli.console import out

    table = Table(title=f"fields ({report['level']} level)")
    for column in ("field", "kind", "kept / total", ""):
        table.add_column(column, justify="right" if column == "kept / total" else "left")
    for row in report["fields"]:
        table.add_row(
            row["field"],
            row["kind"],
            f"{row['kept']:,} / {row['total']:,}",
            "dropped" if row["dropped"] else "",
        )
    out.print(table)
    values, params, size = report["values"], report["parameters"], report["bundle_bytes"]
    target = report["keep_fraction_target"]
    budget = "" if target is None else f" (budget {target:.0%})"
    out.print(
        f"kept {report['kept_fraction']:.1%} of the {report['level']} gates{budget}; "
        f"values {values['kept']:,} / {values['total']:,}; "
        f"fields {len(report['kept_fields'])} / {len(report['fields'])}"
    )
    metrics = Table("", "full", "selected")
    metrics.add_row("parameters", f"{params['full']:,}", f"{params['selected']:,}")
    metrics.add_row("bundle bytes", f"{size['full']:,}", f"{size['selected']:,}")
    for split in ("valid", "test"):
        for name in ("auc", "logloss"):
            full = report["metrics"]["full"][split].get(name)
            chosen = report["metrics"]["selected"][split].get(name)
            metrics.add_row(f"{split} {name}", _number(full), _number(chosen))
    out.print(metrics)
    seconds = report["seconds"]
    out.print(
        f"time: {seconds['total']:.1f} s in all, {report['time_ratio']:.1f}x one training run "
        f"({seconds['full_training']:.1f} s); run saved to {out_dir} "
        "(selection.json, selected.yaml)"
    )
    for note in report["notes"]:
        out.print(f"note: {note}", markup=False)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
