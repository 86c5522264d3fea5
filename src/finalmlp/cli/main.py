"""``finalmlp`` command line: train, evaluate, predict, schema infer, data fetch.

User errors (FinalMLPError) print one line, ``error: ...``, and exit with status 2; no traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from finalmlp.errors import FinalMLPError

app = typer.Typer(
    name="finalmlp",
    help="FinalMLP CTR prediction: train, evaluate and score from raw click logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="Describe data: propose a config from a data file.")
data_app = typer.Typer(help="Public datasets: download with checksum verification.")
app.add_typer(schema_app, name="schema")
app.add_typer(data_app, name="data")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])
USER_ERROR_EXIT = 2


def user_errors(func: F) -> F:
    """Turn FinalMLPError into one red line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FinalMLPError as exc:
            # escape: messages quote user data, and '[/]' or '[missing]' is rich markup
            err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(USER_ERROR_EXIT) from None
        except OSError as exc:  # permissions, disk full, a directory where a file was expected
            where = f" {exc.filename}" if exc.filename else ""
            reason = exc.strerror or str(exc)
            err.print(f"[red]error:[/red] cannot access{escape(where)}: {escape(reason)}")
            raise typer.Exit(USER_ERROR_EXIT) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (data, model, train).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory to write.")] = Path(
        "runs/latest"
    ),
    seed: Annotated[int | None, typer.Option(help="Override train.seed.")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live bar.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --out.")
    ] = False,
) -> None:
    """Train a model from raw data and write the run directory (config, processor, weights,
    metrics)."""
    from finalmlp.config import load_config
    from finalmlp.train.run import train_from_config

    cfg = load_config(config)
    updates: dict[str, Any] = {}
    if seed is not None:
        updates["seed"] = seed
    if no_progress or not sys.stderr.isatty():
        updates["progress"] = False
    if updates:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=updates)})
    metrics = train_from_config(cfg, out_dir, resume=resume)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        _print_summary(metrics, out_dir)


def _print_summary(metrics: dict[str, Any], out_dir: Path) -> None:
    valid, test = metrics["valid"], metrics["test"]
    out.print(
        f"valid AUC {valid['auc']:.4f}  logloss {valid['logloss']:.4f}\n"
        f"test  AUC {test['auc']:.4f}  logloss {test['logloss']:.4f}\n"
        f"{metrics['epochs']} epochs (best {metrics['best_epoch']}), "
        f"{metrics['train_samples_per_s']:,.0f} train samples/s, run saved to {out_dir}"
    )


@app.command()
@user_errors
def preprocess(
    config: Annotated[Path, typer.Argument(help="YAML config (its data section is used).")],
) -> None:
    """Read, fit and encode the data once into the cache (data.cache_dir): later `train` runs,
    and every rank of a torchrun job, start from it."""
    from finalmlp.config import load_config
    from finalmlp.data.dataset import cache_key, cache_root, prepare_data

    cfg = load_config(config)
    data = prepare_data(cfg.data)
    rows = ", ".join(f"{n} {s.num_rows:,}" for n, s in data.splits.items())
    source = "already cached" if data.from_cache else f"encoded in {data.seconds:.1f} s"
    out.print(f"{rows} rows {source}: {cache_root(cfg.data) / cache_key(cfg.data)}")


@app.command()
@user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `finalmlp train`.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled file in the training format.")],
) -> None:
    """Compute AUC and logloss (and group AUC) of a trained run on a labelled file."""
    from finalmlp.predict import evaluate_run

    metrics = evaluate_run(run_dir, data)
    out.print(json.dumps(metrics, indent=2))


@app.command()
@user_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `finalmlp train`.")],
    input_file: Annotated[Path, typer.Option("--input", help="Rows to score (CSV/Parquet).")],
    output_file: Annotated[Path, typer.Option("--output", help="Scores, one per input row.")],
) -> None:
    """Score a file: writes a `score` column (click probability), one row per input row."""
    from finalmlp.predict import predict_file

    predict_file(run_dir, input_file, output_file)


@schema_app.command("infer")
@user_errors
def schema_infer(
    file: Annotated[Path, typer.Argument(help="A data file (CSV/TSV/Parquet).")],
    label: Annotated[str | None, typer.Option(help="Label column (default: guessed).")] = None,
    header: Annotated[
        bool | None, typer.Option("--header/--no-header", help="Default: detected.")
    ] = None,
    separator: Annotated[str | None, typer.Option(help="Default: sniffed.")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, tsv or parquet (default: guessed).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write YAML here.")] = None,
) -> None:
    """Propose a YAML config (feature types, cardinalities) from a data file."""
    from finalmlp.features.infer import infer_schema
    from finalmlp.io import atomic_write_text

    inferred = infer_schema(file, label=label, fmt=fmt, has_header=header, separator=separator)
    text = inferred.to_yaml()
    if output is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(output, text)
        err.print(f"wrote {output}")


@data_app.command("fetch")
@user_errors
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name (see `finalmlp data list`).")],
    dest: Annotated[Path, typer.Option(help="Directory to download into.")] = Path("data"),
    base_url: Annotated[
        str | None, typer.Option(help="Mirror replacing the directory part of each URL.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Download again even if present.")] = False,
) -> None:
    """Download a public dataset and verify its checksum."""
    from finalmlp.data.fetch import fetch_dataset

    path = fetch_dataset(name, dest, base_url=base_url, force=force)
    out.print(f"{name} ready in {path}")


@data_app.command("list")
def data_list() -> None:
    """List the datasets `finalmlp data fetch` knows."""
    from finalmlp.data.fetch import DATASETS

    for key, source in DATASETS.items():
        out.print(f"{key:<22} {source.description}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
