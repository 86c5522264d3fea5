"""The training loop: Adam, regularisation, clipping, validation, early stopping, LR plateaus.

The model returns logits; the loss (binary cross-entropy + L2 terms) lives here. Early stopping
and learning-rate reduction follow the reference implementation: after every validation that
does not improve the monitored value, the learning rate is multiplied by ``lr_decay_factor``;
``patience`` such validations in a row stop training; the best weights are restored at the end.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from finalmlp.batch import Batch
from finalmlp.data.split import EncodedSplit, Loader, TrainingSplit
from finalmlp.errors import ConfigError, DataError, TrainingError
from finalmlp.inference import predict_proba
from finalmlp.metrics import task_metrics
from finalmlp.models.base import CTRModel
from finalmlp.schema import TrainConfig, split_metric_key
from finalmlp.train.checkpoint import Checkpoint, CheckpointStore
from finalmlp.train.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    gather_rows,
    shard_bounds,
    sum_over_ranks,
    sum_tensor_over_ranks,
)
from finalmlp.train.loss import TaskLoss
from finalmlp.train.optim import build_optimizer, clip_gradients
from finalmlp.train.probability import split_base_rate_logloss
from finalmlp.train.progress import TrainingProgress
from finalmlp.train.records import TrainResult, Validation, ValidationHook


@dataclass
class _FitState:
    """What a fit carries from step to step."""

    stopper: EarlyStopping
    best_state: dict[str, torch.Tensor]
    result: TrainResult = field(default_factory=TrainResult)
    samples: int = 0
    loss_sum: float = 0.0
    loss_rows: int = 0

    def add_loss(self, loss: float, rows: int, global_rows: int) -> None:
        self.loss_sum += loss * rows
        self.loss_rows += rows
        self.samples += global_rows

    def take_loss(self, context: DistributedContext) -> float:
        """Row-weighted mean training loss since the last validation, over all ranks."""
        total, rows = sum_over_ranks([self.loss_sum, float(self.loss_rows)], context)
        self.loss_sum, self.loss_rows = 0.0, 0
        return total / max(rows, 1.0)


def check_labels(split: TrainingSplit, name: str, tasks: Sequence[str]) -> None:
    """Every task needs both classes among its labelled rows (else AUC is undefined).

    Raises:
        DataError: no labels, or a task whose labelled rows are all one class.
    """
    counts = split.label_counts()
    if counts is None:
        raise DataError(f"the {name} split has no labels")
    for task, labelled, positives in zip(tasks, counts.labelled, counts.positives, strict=True):
        if positives in (0, labelled):
            only = "1" if positives else "0"
            which = "" if len(tasks) == 1 else f" of task {task!r}"
            raise DataError(
                f"the {name} split has only label {only}{which} ({labelled:,} labelled rows): "
                "AUC is undefined and early stopping cannot work; use a larger or stratified "
                "split"
            )


class EarlyStopping:
    """Tracks the best monitored value (higher is better) and counts validations without gain.

    A validation may be marked not ``eligible`` (its logloss is not better than the base
    rate's, under ``train.keep_better_than_base_rate``): it becomes the best only while no
    eligible one has been seen, and an eligible one always replaces it.
    """

    def __init__(self, patience: int, min_delta: float = 1e-6) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = -math.inf
        self.best_eligible = False
        self.bad_rounds = 0

    def update(self, value: float, eligible: bool = True) -> bool:
        """Record a validation; True when it is the new best."""
        better = value > self.best + self.min_delta
        if (eligible and (better or not self.best_eligible)) or (
            not eligible and not self.best_eligible and better
        ):
            self.best, self.best_eligible, self.bad_rounds = value, eligible, 0
            return True
        self.bad_rounds += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_rounds >= self.patience


class Trainer:
    """Trains a CTRModel on encoded splits.

    Example:
        >>> trainer = Trainer(model, TrainConfig(batch_size=4096))
        >>> result = trainer.fit(data.splits["train"], data.splits["valid"])
        >>> test_metrics = trainer.evaluate(data.splits["test"])

    Args:
        model: the model (logits (B, T)).
        config: the training settings.
        context: this process's place in a torchrun job.
        checkpoints: where to write checkpoints (rank 0), or None.
        on_validation: called after every validation.
        tasks: the T task names (metric names ``<task>.auc``); default ``task0``...
        task_weights: the T loss weights; default 1 each.
    """

    def __init__(
        self,
        model: CTRModel,
        config: TrainConfig,
        context: DistributedContext = SINGLE_PROCESS,
        checkpoints: CheckpointStore | None = None,
        on_validation: ValidationHook | None = None,
        tasks: Sequence[str] | None = None,
        task_weights: Sequence[float] | None = None,
    ) -> None:
        self.model = model
        self.tasks = list(tasks) if tasks is not None else _task_names(model.num_tasks)
        self.base_rate_logloss: list[float] | None = None  # per task, set by fit
        if len(self.tasks) != model.num_tasks:
            raise ConfigError(
                f"the model predicts {model.num_tasks} tasks but {len(self.tasks)} are named"
            )
        self.on_validation = on_validation
        self.config = config
        self.context = context
        self.checkpoints = checkpoints if context.is_main else None
        self.device = next(model.parameters()).device
        # Under torchrun the training forward goes through DDP (gradients averaged across
        # ranks); evaluation and the saved state use the plain model.
        if config.sparse_embeddings and context.enabled:
            raise ConfigError(
                "train.sparse_embeddings works in one process; under torchrun set it to false"
            )
        self.network: nn.Module = DistributedDataParallel(model) if context.enabled else model
        self.optimizer = build_optimizer(
            model, config.learning_rate, config.sparse_embeddings, config.embedding_l2
        )
        if self.device.type == "cuda":  # process-wide: set for every run, not only tf32 ones
            torch.backends.cuda.matmul.allow_tf32 = config.precision == "tf32"
            torch.backends.cudnn.allow_tf32 = config.precision == "tf32"
        self.autocast = config.precision == "bf16"
        weights = task_weights if task_weights is not None else [1.0] * model.num_tasks
        self.loss = TaskLoss(weights)
        # Set by fit: whether rows lack some task's label, so that each step counts them.
        self.count_labels = False

    def fit(
        self,
        train: TrainingSplit,
        valid: EncodedSplit,
        resume: Checkpoint | None = None,
    ) -> TrainResult:
        """Train until ``max_epochs`` or early stopping; the best weights are restored.

        ``train`` gives its own loader (in memory: BatchLoader; Parquet shards of
        ``data.streaming``: StreamingLoader). With ``resume`` training goes on from that
        checkpoint exactly as if it had never stopped (same batches, same dropout masks, same
        decisions).
        """
        cfg = self.config
        check_labels(train, "training", self.tasks)
        check_labels(valid, "validation", self.tasks)
        counts = train.label_counts()
        self.base_rate_logloss = split_base_rate_logloss(counts, valid.label)
        # Missing labels: each step's per-task denominators are counted over the global batch.
        self.count_labels = counts is not None and any(n != train.num_rows for n in counts.labelled)
        loader = train.loader(
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        state = _FitState(EarlyStopping(cfg.patience), copy.deepcopy(self.model.state_dict()))
        first_epoch, skip = 1, 0
        if resume is not None:
            first_epoch, skip = self._restore(resume, state, len(loader))
        show = cfg.progress and self.context.is_main
        with TrainingProgress(
            enabled=show, total=len(loader), log=self.context.is_main
        ) as progress:
            for epoch in range(first_epoch, cfg.max_epochs + 1):
                if state.result.stopped_early:
                    break
                state.result.epochs = epoch
                loader.epoch = epoch - 1  # the epoch's permutation, also after a resume
                if self._run_epoch(epoch, loader, valid, state, progress, skip):
                    break
                skip = 0
        self.model.load_state_dict(state.best_state)
        result = state.result
        result.train_samples_per_s = state.samples / max(result.train_seconds, 1e-9)
        return result

    def _run_epoch(
        self,
        epoch: int,
        loader: Loader,
        valid: EncodedSplit,
        state: _FitState,
        progress: TrainingProgress,
        skip: int = 0,
    ) -> bool:
        """One pass over the training data (after ``skip`` batches already done), validating
        and checkpointing when due; True when training stops."""
        cfg, result = self.config, state.result
        progress.start_epoch(epoch, cfg.max_epochs)
        self.model.train()
        started = time.perf_counter()
        # closed in any case: an exception (a non-finite loss, a pruned trial) stops a
        # streaming loader's reader thread at once, not when the traceback is collected
        with contextlib.closing(loader.batches(skip)) as batches:
            for index, batch in enumerate(batches, start=skip + 1):
                global_rows = loader.global_rows(index)
                loss = self._train_step(batch, global_rows, result.steps + 1, epoch)
                result.steps += 1
                state.add_loss(loss, batch.size, global_rows)
                progress.advance(loss, global_rows)
                last_step = epoch == cfg.max_epochs and index == len(loader)
                if not self._validation_due(result.steps, index, len(loader), last_step):
                    self._maybe_checkpoint(state, epoch, index, len(loader))
                    continue
                record = self._validate(
                    valid, epoch, result, state.take_loss(self.context), state.stopper
                )
                started += record.seconds  # throughput counts training time only
                progress.log_validation(record)
                if self.on_validation is not None:
                    self.on_validation(record)
                if record.improved:
                    state.best_state = copy.deepcopy(self.model.state_dict())
                elif cfg.reduce_lr_on_plateau:
                    self._decay_learning_rate()
                if state.stopper.should_stop:
                    result.stopped_early = True
                result.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                self._maybe_checkpoint(state, epoch, index, len(loader))
                if result.stopped_early:
                    break
                self.model.train()
        result.train_seconds += time.perf_counter() - started
        return result.stopped_early

    def _maybe_checkpoint(
        self, state: _FitState, epoch: int, batches_done: int, epoch_batches: int
    ) -> None:
        """Every ``checkpoint_every_steps`` steps and at each epoch end."""
        every = self.config.checkpoint_every_steps
        due = batches_done == epoch_batches or (every and state.result.steps % every == 0)
        if self.checkpoints is None or not due:
            return
        self.checkpoints.save(
            Checkpoint(state.result.steps, epoch, batches_done, self._snapshot(state))
        )

    def _snapshot(self, state: _FitState) -> dict[str, Any]:
        result = state.result
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": state.best_state,
            "stopper": {
                "best": state.stopper.best,
                "bad_rounds": state.stopper.bad_rounds,
                "best_eligible": state.stopper.best_eligible,
            },
            "history": result.history_dicts(),
            "best_index": result.history.index(result.best) if result.best else -1,
            "counters": [result.steps, result.train_seconds, result.stopped_early],
            "fit": [state.samples, state.loss_sum, state.loss_rows],
            "rng": torch.get_rng_state(),
        }

    def _restore(
        self, checkpoint: Checkpoint, state: _FitState, epoch_batches: int
    ) -> tuple[int, int]:
        """Load a snapshot into the model, optimizer and state; (first epoch, batches to skip)."""
        snap, result = checkpoint.state, state.result
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        state.best_state = snap["best_state"]
        state.stopper.best = float(snap["stopper"]["best"])
        state.stopper.best_eligible = bool(snap["stopper"].get("best_eligible", True))
        state.stopper.bad_rounds = int(snap["stopper"]["bad_rounds"])
        result.history = [Validation(**record) for record in snap["history"]]
        result.best = result.history[snap["best_index"]] if snap["best_index"] >= 0 else None
        result.steps, result.train_seconds, result.stopped_early = snap["counters"]
        state.samples, state.loss_sum, state.loss_rows = snap["fit"]
        torch.set_rng_state(snap["rng"])
        result.epochs = checkpoint.epoch
        if checkpoint.batches_done >= epoch_batches:
            return checkpoint.epoch + 1, 0
        return checkpoint.epoch, checkpoint.batches_done

    def _validation_due(
        self, step: int, index_in_epoch: int, epoch_steps: int, last_step: bool
    ) -> bool:
        """Every N steps (or at each epoch end); always after the very last step, so steps
        past the last multiple of N are never thrown away."""
        if self.config.eval_every_steps is not None:
            return step % self.config.eval_every_steps == 0 or last_step
        return index_in_epoch == epoch_steps

    def _train_step(self, batch: Batch, global_rows: int, step: int = 0, epoch: int = 0) -> float:
        """One optimizer step on this rank's rows of a global batch; returns the local loss."""
        batch = batch.to(self.device)
        label = batch.label
        assert label is not None  # training splits always carry labels
        label = label if label.dim() == 2 else label.unsqueeze(-1)  # (B, T)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.network(batch)
            sums, labelled = self.loss.sums(logits.float(), label)  # (T,), (T,)
            extra = self.model.auxiliary_loss(logits, label)
        # Each task's mean is over the labelled rows of the global batch: DDP averages the
        # ranks' gradients, so each rank's sums are divided by (global count / ranks).
        world = self.context.world_size
        if self.count_labels:
            counts = sum_tensor_over_ranks(labelled.detach(), self.context)
        else:
            counts = torch.full_like(sums, float(global_rows))
        loss = self.loss.combine(sums, counts / world)
        # This rank's share of the global loss, per row: rows-weighted over ranks, it averages
        # to the global batch's loss (with one process: the batch's loss).
        value = float(self.loss.combine(sums.detach(), counts)) * global_rows / batch.size
        if extra is not None:
            loss = loss + extra * (batch.size * world / global_rows)
            value += float(extra.detach())
        if not math.isfinite(value):
            raise TrainingError(
                f"the training loss became {value} at step {step} (epoch {epoch}); lower "
                "train.learning_rate, set train.max_grad_norm, or check numeric features for "
                "huge values (transform: log or standard)"
            )
        reg = self.model.regularization(
            self.config.embedding_l2, self.config.net_l2, self.config.sparse_embeddings
        )
        total = loss + reg
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.max_grad_norm is not None:
            clip_gradients(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        return value

    def _validate(
        self,
        valid: EncodedSplit,
        epoch: int,
        result: TrainResult,
        train_loss: float,
        stopper: EarlyStopping,
    ) -> Validation:
        started = time.perf_counter()
        metrics = self.evaluate(valid)
        monitor = monitor_value(metrics, self.config.monitor)
        improved = stopper.update(monitor, self._beats_base_rate(metrics))
        record = Validation(
            epoch=epoch,
            step=result.steps,
            train_loss=train_loss,
            learning_rate=self.optimizer.param_groups[0]["lr"],
            metrics=metrics,
            monitor=monitor,
            improved=improved,
            seconds=time.perf_counter() - started,
        )
        result.history.append(record)
        if improved:
            result.best = record
        return record

    def _beats_base_rate(self, metrics: dict[str, float]) -> bool:
        """Every task's validation logloss is below its base-rate logloss (always True
        without ``train.keep_better_than_base_rate``)."""
        if not self.config.keep_better_than_base_rate or self.base_rate_logloss is None:
            return True
        keys = ["logloss"] if len(self.tasks) == 1 else [f"{t}.logloss" for t in self.tasks]
        return all(
            metrics[key] < base for key, base in zip(keys, self.base_rate_logloss, strict=True)
        )

    def _decay_learning_rate(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["lr"] * self.config.lr_decay_factor, self.config.min_lr)

    @torch.no_grad()
    def predict(self, split: EncodedSplit) -> np.ndarray:
        """Probabilities (N, T) in row order.

        Under torchrun each rank scores its contiguous shard and every rank gets all
        predictions in row order, so metrics (and early-stopping decisions) are identical on
        all ranks.
        """
        rows = shard_bounds(split.num_rows, self.context)
        local = predict_proba(self.model, split, self.config.eval_batch_size, rows)
        return gather_rows(local, self.context)

    def evaluate(self, split: EncodedSplit) -> dict[str, float]:
        """AUC and logloss (group AUC with groups) per task: see :func:`task_metrics`."""
        if split.label is None:
            raise ValueError("evaluation needs labels")
        return task_metrics(split.label, self.predict(split), self.tasks, split.group)


def monitor_value(metrics: dict[str, float], monitor: dict[str, float]) -> float:
    """``sum(weight * metric)``; a ``<task>.<metric>`` key of a one-task run is its metric."""
    total = 0.0
    for key, weight in monitor.items():
        value = metrics.get(key)
        if value is None:
            value = metrics[split_metric_key(key)[1]]
        total += weight * value
    return total


def _task_names(count: int) -> list[str]:
    return ["label"] if count == 1 else [f"task{t}" for t in range(count)]
