"""``finalmlp report RUN_DIR``: write the run's self-contained report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finalmlp.errors import DataError


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `finalmlp train`.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write an HTML report of a run: loss/AUC per epoch, ROC, precision-recall, reliability
    (ECE), score histograms, FinalMLP's gate per field, permutation importance."""
    from finalmlp.report import write_report

    if not run_dir.is_dir():
        raise DataError(f"run directory {str(run_dir)!r} not found; pass the --out of `train`")
    path = write_report(run_dir, out)
    typer.echo(f"wrote {path}")


def report_after_training(run_dir: Path) -> None:
    """Write RUN_DIR/report.html at the end of `train`: a failure only warns (the run is saved
    already and stays valid), it never fails the training."""
    try:
        from finalmlp.report import write_report

        path = write_report(run_dir)
    except Exception as exc:  # the report is an extra: any failure leaves the run as it is
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        typer.echo(
            f"warning: no report written ({reason}); try `finalmlp report {run_dir}`", err=True
        )
        return
    typer.echo(f"report: {path}")
