"""One training run from a config: prepare data, build the model, train, evaluate, save."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finalmlp.bundle import check_run_target, save_run
from finalmlp.calibration import Calibration, fit_calibration
from finalmlp.data.dataset import EncodedSplit, PreparedData, prepare_data
from finalmlp.data.split import as_label_matrix
from finalmlp.errors import ConfigError, DataError
from finalmlp.models import build_model
from finalmlp.schema import DataConfig, ExperimentConfig
from finalmlp.train.checkpoint import CheckpointStore
from finalmlp.train.distributed import (
    DistributedContext,
    barrier,
    cleanup,
    init_distributed,
    process_device,
)
from finalmlp.train.probability import probability_check
from finalmlp.train.progress import console
from finalmlp.train.records import ValidationHook
from finalmlp.train.trainer import Trainer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {name!r} but no CUDA device is available; use cpu")
    return device


def train_from_config(
    config: ExperimentConfig,
    out: Path | None = None,
    resume: bool = False,
    *,
    on_validation: ValidationHook | None = None,
    prepared: PreparedData | None = None,
) -> dict[str, Any]:
    """Train and evaluate; write the run directory to ``out`` when given. Returns the metrics.

    The same call runs in one process or in every process of a ``torchrun`` job: then the
    processor is fitted once (rank 0 fills the encoded-data cache, the others wait), each rank
    trains on its part of every global batch, and only rank 0 logs and writes ``out``.

    With ``out``, checkpoints go to ``out/checkpoints/`` (each epoch end, and every
    ``train.checkpoint_every_steps``); ``resume`` continues from the newest good one.

    ``on_validation`` is called after every validation (``finalmlp tune`` prunes there);
    ``prepared`` is data already prepared for ``config.data`` (the tuner's trials share it).
    """
    if out is not None:
        check_run_target(Path(out))  # before spending the training time
    if config.train.num_threads is not None:
        torch.set_num_threads(config.train.num_threads)
    device = resolve_device(config.train.device)
    context = init_distributed(device, config.train.distributed_timeout_s)
    try:
        device = process_device(device, context)
        return _train(config, out, device, context, resume, on_validation, prepared)
    finally:
        cleanup(context)


def _train(
    config: ExperimentConfig,
    out: Path | None,
    device: torch.device,
    context: DistributedContext,
    resume: bool,
    on_validation: ValidationHook | None = None,
    prepared: PreparedData | None = None,
) -> dict[str, Any]:
    data = prepared if prepared is not None else _prepare(config.data, context)
    rows = data.rows
    log = console.print if context.is_main else _silent
    source = "cache" if data.from_cache else "raw files"
    log(
        f"data: {rows['train']:,} train / {rows['valid']:,} valid / {rows['test']:,} test rows, "
        f"{data.processor.layout.num_fields} fields, from {source} in {data.seconds:.1f} s"
    )
    tasks = config.data.tasks
    seed_everything(config.train.seed)
    model = build_model(data.processor.layout, config.model, len(tasks)).to(device)
    num_parameters = sum(p.numel() for p in model.parameters())
    where = f"{context.world_size} processes ({context.backend})" if context.enabled else device
    log(f"model: {config.model.name}, {num_parameters:,} parameters, on {where}")
    store = CheckpointStore(Path(out) / "checkpoints") if out is not None else None
    start = store.latest() if store is not None and resume else None
    if resume:
        log(f"resuming from step {start.step}" if start else "no checkpoint found: from step 0")
    weights = config.train.task_weights or {}
    trainer = Trainer(
        model,
        config.train,
        context,
        store,
        on_validation,
        tasks=[task.name for task in tasks],
        task_weights=[weights.get(task.name, task.weight) for task in tasks],
    )
    check_task_labels(data, config.data)
    result = trainer.fit(data.train, data.splits["valid"], resume=start)
    metrics: dict[str, Any] = {
        "model": config.model.name,
        "valid": trainer.evaluate(data.splits["valid"]),
        "test": trainer.evaluate(data.splits["test"]),
        "epochs": result.epochs,
        "steps": result.steps,
        "best_epoch": result.best.epoch if result.best else None,
        "stopped_early": result.stopped_early,
        "train_samples_per_s": result.train_samples_per_s,
        "train_seconds": result.train_seconds,
        "preprocess_seconds": data.seconds,
        "preprocess_from_cache": data.from_cache,
        "num_parameters": num_parameters,
        "processes": context.world_size,
        "rows": rows,
        "history": result.history_dicts(),
    }
    calibration = _calibrate(config.train.calibration, trainer, data.splits, metrics, log)
    metrics["probability_check"] = _check_probabilities(trainer, data, calibration)
    if out is not None and context.is_main:
        save_run(out, config, data.processor, model, metrics, calibration)
    barrier(context)
    return metrics


def _calibrate(
    method: str,
    trainer: Trainer,
    splits: dict[str, EncodedSplit],
    metrics: dict[str, Any],
    log: Callable[..., object],
) -> Calibration | None:
    """Fit ``train.calibration`` on the validation split; its effect goes into ``metrics``.

    A split that cannot be calibrated (one class) skips calibration with a warning: the
    trained model is still saved.
    """
    if method == "none":
        return None
    scored = {}
    for name in ("valid", "test"):
        label = splits[name].label
        assert label is not None
        scored[name] = (label, trainer.predict(splits[name]))
    try:
        calibration, metrics["calibration"] = fit_calibration(method, scored, trainer.tasks)
    except DataError as exc:
        log(f"warning: calibration skipped: {exc}", markup=False)
        return None
    log(f"calibration: {method}, fitted on the validation split")
    return calibration


def _check_probabilities(
    trainer: Trainer, data: PreparedData, calibration: Calibration | None
) -> dict[str, Any]:
    """The served validation probabilities against the base rate and the ECE limit (see
    :mod:`finalmlp.train.probability`)."""
    valid = data.splits["valid"]
    assert valid.label is not None
    probs = trainer.predict(valid)
    if calibration is not None:
        probs = calibration.transform(probs)
    counts = data.train.label_counts()
    if counts is None:  # unreachable for a labelled train split; the valid rate stands in
        rates = np.nanmean(np.asarray(as_label_matrix(valid.label)), axis=0)
    else:
        rates = np.asarray(counts.positives, float) / np.maximum(counts.labelled, 1)
    scores = "model" if calibration is None else calibration.method
    return probability_check(valid.label, probs, rates, trainer.tasks, scores)


def check_task_labels(data: PreparedData, config: DataConfig) -> None:
    """Each task needs both classes among the labelled rows of train and valid.

    Raises:
        DataError: naming the split's file, the task's column and the fix.
    """
    for split_name, split in (("train", data.train), ("valid", data.splits["valid"])):
        counts = split.label_counts()
        if counts is None:
            continue
        where = getattr(config, split_name) or f"the {split_name} split"
        for task, labelled, positives in zip(
            config.tasks, counts.labelled, counts.positives, strict=True
        ):
            if labelled and positives not in (0, labelled):
                continue
            only = "no labelled row" if not labelled else f"only label {int(positives > 0)}"
            name = "" if len(config.tasks) == 1 else f" (task {task.name!r})"
            raise DataError(
                f"{where}: label column {task.column!r}{name} has {only} in its "
                f"{labelled:,} labelled rows, so its AUC is undefined and early stopping cannot "
                f"work; give a {split_name} file (or data.split) holding both classes"
            )


def _prepare(data_config: DataConfig, context: DistributedContext) -> PreparedData:
    """One process: prepare as usual. Under torchrun: rank 0 fits and fills the cache while the
    others wait; then every rank opens the cache memory-mapped and reads only its rows."""
    if not context.enabled:
        return prepare_data(data_config)
    if context.is_main:
        prepare_data(data_config)
    barrier(context)
    return prepare_data(data_config, mmap=True)


def _silent(*args: object, **kwargs: object) -> None:
    del args, kwargs
