"""``finalmlp`` command line: train, evaluate, predict, schema infer, data fetch.

User errors (FinalMLPError) print one line, ``error: ...``, and exit with status 2; no traceback.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape

from finalmlp.cli.console import err, out
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

F = TypeVar("F", bound=Callable[..., Any])
USER_ERROR_EXIT = 2


def user_errors(func: F) -> F:
    """Turn FinalMLPError into one red line on stderr and exit status 2; print warnings as
    ``warning: ...`` lines (their source line is the package's, or a reader thread's: no use
    to a user of the command)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
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

    wrapper.__doc__ = help_text(func.__doc__)
    return wrapper  # type: ignore[return-value]


def help_text(doc: str | None) -> str | None:
    """A docstring as ``--help`` should show it: each prose paragraph on one line, which the
    terminal wraps as wide as it is (Typer keeps the hard line breaks of later paragraphs, so
    a docstring wrapped for the source broke sentences mid-line); indented blocks such as a
    YAML example keep their lines."""
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split("\n"))
        for p in paragraphs
    )


def _show_warning(message: Warning | str, *args: Any, **kwargs: Any) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", soft_wrap=True)


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
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip writing --out/report.html.")
    ] = False,
    use_mlflow: Annotated[
        bool,
        typer.Option("--mlflow", help="Log params, metrics, report.html to MLflow (optional)."),
    ] = False,
) -> None:
    """Train a model from raw data and write the run directory (config, processor, weights,
    metrics) and its report.html."""
    from finalmlp.config import load_config
    from finalmlp.train.run import train_from_config

    cfg = load_config(config)
    if use_mlflow:
        from finalmlp.tune.tracking import require_mlflow

        require_mlflow()  # before the training time: 'pip install mlflow'
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
        if not no_report:
            from finalmlp.cli.report import report_after_training

            report_after_training(out_dir)
        if use_mlflow:
            from finalmlp.tune.tracking import log_training_run

            log_training_run(cfg, metrics, out_dir)
        _warn_probabilities(metrics)


def _warn_probabilities(metrics: dict[str, Any]) -> None:
    """The last lines of `train`: loud when the probabilities are not usable as such."""
    from finalmlp.train.probability import probability_problems

    for line in probability_problems(metrics):
        err.print(f"[bold red]WARNING:[/bold red] {escape(line)}", soft_wrap=True)


def _print_summary(metrics: dict[str, Any], out_dir: Path) -> None:
    from finalmlp.metrics import metric_rows

    lines = []
    for split in ("valid", "test"):
        for task, values in metric_rows(metrics[split]):
            label = split if task is None else f"{split} {task}"
            lines.append(f"{label:<5} AUC {values['auc']:.4f}  logloss {values['logloss']:.4f}")
    out.print(
        "\n".join(lines) + "\n"
        f"{metrics['epochs']} epochs (best {metrics['best_epoch']}), "
        f"{metrics['train_samples_per_s']:,.0f} train samples/s, run saved to {out_dir}"
    )
    if "calibration" in metrics:
        from finalmlp.calibration import describe_effect

        out.print(f"{metrics['calibration']['method']} calibration (fitted on valid):")
        out.print(describe_effect(metrics["calibration"]), markup=False)


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
    rows = ", ".join(f"{name} {count:,}" for name, count in data.rows.items())
    source = "already cached" if data.from_cache else f"encoded in {data.seconds:.1f} s"
    out.print(f"{rows} rows {source}: {cache_root(cfg.data) / cache_key(cfg.data)}")


@app.command()
@user_errors
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `finalmlp train`.")],
    data: Annotated[Path, typer.Option("--data", help="Labelled file in the training format.")],
    uncalibrated: Annotated[
        bool, typer.Option("--uncalibrated", help="The model's raw scores, not calibrated.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Compute AUC and logloss (and group AUC) of a trained run on a labelled file, a row per
    task (of its calibrated scores, when the run has a calibration)."""
    from rich.table import Table

    from finalmlp.metrics import metric_rows
    from finalmlp.predict import evaluate_run

    metrics = evaluate_run(run_dir, data, calibrated=not uncalibrated)
    if as_json:
        out.print(json.dumps(metrics, indent=2))
        return
    rows = metric_rows(metrics)
    names = list(rows[0][1])
    table = Table("task", *names)
    for task, values in rows:
        table.add_row(task or "(the task)", *(f"{values[n]:.4f}" for n in names))
    if len(rows) > 1:
        means = {n: metrics[n] for n in names}
        table.add_row("mean", *(f"{means[n]:.4f}" for n in names))
    out.print(table)


@app.command()
@user_errors
def predict(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `finalmlp train`.")],
    input_file: Annotated[
        Path, typer.Option("--input", help="Rows to score (CSV/TSV/Parquet, any size).")
    ],
    output_file: Annotated[
        Path, typer.Option("--output", help="Scores, one per input row (.csv/.tsv/.parquet).")
    ],
    id_columns: Annotated[
        str, typer.Option("--id-columns", help="Input columns to copy before the score: a,b.")
    ] = "",
    backend: Annotated[
        str, typer.Option(help="auto (the faster, measured), torch or onnx (ONNX Runtime).")
    ] = "auto",
    chunk_rows: Annotated[int, typer.Option(help="Rows read and scored at a time.")] = 100_000,
    uncalibrated: Annotated[
        bool, typer.Option("--uncalibrated", help="The model's raw scores, not calibrated.")
    ] = False,
) -> None:
    """Score a file in chunks: writes the id columns and a `score` column (click probability,
    calibrated when the run has a calibration), one row per input row, in input order."""
    from finalmlp.predict import predict_file
    from finalmlp.serve.batch import check_backend

    ids = [name.strip() for name in id_columns.split(",") if name.strip()]
    predict_file(
        run_dir,
        input_file,
        output_file,
        id_columns=ids,
        backend=check_backend(backend),
        chunk_rows=chunk_rows,
        calibrated=not uncalibrated,
    )


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `finalmlp train`.")],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Write RUN_DIR/model.onnx (ids in, probability out).")
    ] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset version (17 or later).")] = 18,
) -> None:
    """Export the run's model for other runtimes (ONNX), checked against PyTorch's scores."""
    from finalmlp.errors import ConfigError
    from finalmlp.serve.onnx import export_onnx

    if not onnx:
        raise ConfigError("choose an export format: --onnx (the only one so far)")
    if opset < 17:
        raise ConfigError(f"--opset must be 17 or later, got {opset}")
    result = export_onnx(run_dir, opset=opset)
    out.print(
        f"wrote {result.path} ({result.exporter} exporter, opset {opset}, "
        f"max |ONNX Runtime - PyTorch| {result.max_abs_diff:.1e}) in {result.seconds:.1f} s"
    )


@app.command()
@user_errors
def serve(
    bundle: Annotated[
        Path | None, typer.Argument(help="Run directory to serve (omit when giving --arm).")
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the service to the network.")
    ] = "127.0.0.1",
    arm: Annotated[
        list[str] | None,
        typer.Option("--arm", help="A/B arm NAME=DIR:WEIGHT; repeat for each arm."),
    ] = None,
    ab_log: Annotated[
        Path | None, typer.Option(help="Append-only JSONL log of impressions and feedback.")
    ] = None,
    unknown_fields: Annotated[
        str, typer.Option(help="A record field the model does not use: reject or ignore.")
    ] = "reject",
    max_batch: Annotated[int, typer.Option(help="Most records per request.")] = 1024,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body.")] = 8 * 1024 * 1024,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FINALMLP_API_KEY", help="Require header X-API-Key with this value."),
    ] = None,
    key_field: Annotated[
        str | None, typer.Option(help="Record field used as sticky A/B key (e.g. user).")
    ] = None,
    micro_batch: Annotated[bool, typer.Option(help="Score concurrent requests together.")] = True,
    workers: Annotated[
        int, typer.Option(min=1, help="Model calls in flight; requests batch while all are busy.")
    ] = 2,
    threads: Annotated[
        int, typer.Option(min=1, help="Torch threads per model call (1: best latency).")
    ] = 1,
    header_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a request's headers (408).")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a client has to send a body after its headers (408).")
    ] = 30.0,
    keep_alive_timeout: Annotated[
        int, typer.Option(help="Seconds an idle connection is kept open between requests.")
    ] = 5,
    max_connections: Annotated[
        int, typer.Option(help="Open connections + requests in flight beyond which: 503.")
    ] = 512,
) -> None:
    """Serve click probabilities over HTTP (FastAPI): /v1/predict, A/B arms, /metrics.
    SIGHUP (or POST /v1/admin/reload) reloads the bundles with no failed requests."""
    import os

    import torch
    from pydantic import ValidationError

    from finalmlp.config import format_validation_error
    from finalmlp.errors import ConfigError
    from finalmlp.serve.ab import Arm, parse_arm
    from finalmlp.serve.app import create_app, load_arms
    from finalmlp.serve.server import serve_forever
    from finalmlp.serve.settings import ServeSettings

    if api_key is None and os.environ.get("FINALMLP_API_KEY") is not None:  # set, but empty
        raise ConfigError(
            "FINALMLP_API_KEY is set but empty, which would serve without a key; set it to "
            "the key, or unset it (unset FINALMLP_API_KEY) to serve without one"
        )
    if (bundle is None) == (not arm):
        raise ConfigError("give one BUNDLE directory, or --arm NAME=DIR:WEIGHT for each arm")
    arms = [parse_arm(spec) for spec in arm] if arm else [Arm("default", Path(str(bundle)))]
    try:
        settings = ServeSettings(
            unknown_fields=unknown_fields,
            max_batch=max_batch,
            max_body_bytes=max_body_bytes,
            api_key=api_key,
            key_field=key_field,
            ab_log=ab_log,
            micro_batch=micro_batch,
            micro_batch_workers=workers,
            reload_on_sighup=True,
            header_timeout_s=header_timeout,
            body_timeout_s=body_timeout,
            keep_alive_timeout_s=keep_alive_timeout,
            max_connections=max_connections,
        )
    except ValidationError as exc:
        raise ConfigError(f"serve options: {format_validation_error(exc)}") from None
    torch.set_num_threads(threads)  # tiny batches: spinning worker threads only add latency
    loaded = load_arms(arms, settings.unknown_fields)
    for item in loaded:
        slow = "" if item.rowwise else " (row-wise encoding off: slower small requests)"
        err.print(f"arm {item.name} ({item.arm.weight:.0%}): {item.arm.path} {item.version}{slow}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] listening on {host}, not only this machine")
    err.print(f"serving on http://{host}:{port} (Ctrl-C stops, SIGHUP reloads)")
    app = create_app(loaded, settings)
    serve_forever(app, host, port, settings)


@schema_app.command("infer")
@user_errors
def schema_infer(
    file: Annotated[Path, typer.Argument(help="A data file (CSV/TSV/Parquet/libsvm/libFFM).")],
    label: Annotated[str | None, typer.Option(help="Label column (default: guessed).")] = None,
    header: Annotated[
        bool | None, typer.Option("--header/--no-header", help="Default: detected.")
    ] = None,
    separator: Annotated[str | None, typer.Option(help="Default: sniffed.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, tsv, parquet, libsvm or libffm (default: guessed)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write YAML here.")] = None,
    field_map: Annotated[
        Path | None,
        typer.Option(help="libsvm: JSON or featindex.txt naming each index's field."),
    ] = None,
    valid: Annotated[
        Path | None, typer.Option(help="Validation file: read too, and named in the config.")
    ] = None,
    test: Annotated[
        Path | None, typer.Option(help="Test file: read too, and named in the config.")
    ] = None,
) -> None:
    """Propose a whole YAML config from a data file (and its valid/test files): feature types
    and cardinalities, and a model and training settings sized to the number of rows."""
    from finalmlp.features.infer import infer_schema
    from finalmlp.io import atomic_write_text

    inferred = infer_schema(
        file,
        label=label,
        fmt=fmt,
        has_header=header,
        separator=separator,
        field_map=field_map,
        valid=valid,
        test=test,
    )
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


def _register_commands() -> None:
    """Commands that live in their own modules (kept out of this file's length)."""
    from finalmlp.cli.bench import bench
    from finalmlp.cli.calibrate import calibrate
    from finalmlp.cli.report import report
    from finalmlp.cli.tune import tune

    app.command(name="bench")(user_errors(bench))
    app.command(name="calibrate")(user_errors(calibrate))
    app.command(name="report")(user_errors(report))
    app.command(name="tune")(user_errors(tune))


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
