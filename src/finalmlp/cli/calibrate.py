"""``finalmlp calibrate``: add, replace or remove the post-hoc calibration of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def calibrate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `finalmlp train`.")],
    method: Annotated[
        str,
        typer.Option(
            "--method", help="platt (sigmoid of the logit), isotonic, or none (remove it)."
        ),
    ],
) -> None:
    """Fit a calibration on the run's validation split and store it in the run
    (calibration.json): evaluate, predict and serve then score through it. Prints the
    logloss, ECE and AUC before and after, on the validation and test splits."""
    from finalmlp.calibration import describe_effect
    from finalmlp.cli.console import out
    from finalmlp.predict import calibrate_run

    effect = calibrate_run(run_dir, method.strip().lower())
    if effect is None:
        out.print(f"removed the calibration of {run_dir}")
        return
    out.print(f"{method} calibration fitted on valid, saved to {run_dir}")
    out.print(describe_effect(effect), markup=False)
