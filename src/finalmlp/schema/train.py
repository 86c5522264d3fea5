"""The ``train:`` section and the whole experiment config (data, model, train, select)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from finalmlp.schema.base import StrictModel
from finalmlp.schema.data import DataConfig
from finalmlp.schema.models import (
    MODEL_TRAIN_DEFAULTS,
    FinalMLPConfig,
    HoMEConfig,
    ModelConfig,
    resolve_task_groups,
)
from finalmlp.schema.select import SelectConfig

# ----------------------------------------------------------------------------- training
MonitorMetric = Literal["auc", "logloss", "gauc"]
MONITOR_METRICS = ("auc", "logloss", "gauc")


def _monitor_auc() -> dict[str, float]:
    return {"auc": 1.0}


def split_metric_key(key: str) -> tuple[str | None, str]:
    """``"income.auc"`` -> ``("income", "auc")``; ``"auc"`` -> ``(None, "auc")`` (the mean over
    tasks, or the one task's value)."""
    task, dot, metric = key.rpartition(".")
    return (task if dot else None), metric


class TrainConfig(StrictModel):
    batch_size: int = Field(4096, gt=0)
    eval_batch_size: int = Field(16384, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    embedding_l2: float = Field(0.0, ge=0)  # lambda/2 * ||W||^2 over whole embedding tables
    net_l2: float = Field(0.0, ge=0)  # same over the network's weights and biases
    max_grad_norm: float | None = Field(10.0, gt=0)
    # Sparse gradients for embedding tables: SparseAdam updates only the rows of the batch
    # and embedding_l2 covers only those rows (see finalmlp.train.optim). For tables of
    # millions of rows; one process only.
    sparse_embeddings: bool = False
    # Matrix-product precision of training steps: fp32 (as the reference), tf32 (CUDA's
    # TensorFloat-32 matmuls: a process-wide torch setting), bf16 (autocast of the forward
    # and loss to bfloat16; weights, optimizer and evaluation stay fp32). For GPUs.
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    max_epochs: int = Field(100, ge=1)
    eval_every_steps: int | None = Field(None, gt=0)  # default: once per epoch
    # With --out: a checkpoint at every epoch end, and every N steps when set (for --resume).
    checkpoint_every_steps: int | None = Field(None, gt=0)
    # The monitored value is sum(weight * metric); {auc: 1} as in BARS, {auc: 1, logloss: -1}
    # for the mix FuxiCTR users also use. Higher is better. With several tasks a key is
    # ``<task>.<metric>`` ({income.auc: 1, never_married.auc: 1}); a plain metric is its mean
    # over the tasks.
    monitor: dict[str, float] = Field(default_factory=_monitor_auc)
    # Loss weight per task name (several tasks); default: each task's data.labels weight (1).
    task_weights: dict[str, float] | None = None
    patience: int = Field(2, ge=1)
    reduce_lr_on_plateau: bool = True
    lr_decay_factor: float = Field(0.1, gt=0, lt=1)
    min_lr: float = Field(1e-6, ge=0)
    seed: int = 2021
    num_threads: int | None = Field(None, gt=0)  # torch intra-op threads; default: all cores
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda", "cuda:1", ...
    # Under torchrun: how long a collective waits for the other ranks before the job fails
    # (it covers rank 0 preprocessing while the others wait, so it is generous).
    distributed_timeout_s: float = Field(1800.0, gt=0)
    progress: bool = True
    # Post-hoc calibration fitted on the validation split after training, stored in the run
    # (calibration.json) and applied wherever it scores (see finalmlp.calibration). Platt by
    # default: measured in docs/reliability.md (issue 16), it turns probabilities worse than
    # the base rate into usable ones and leaves AUC as it is.
    calibration: Literal["none", "platt", "isotonic"] = "platt"
    # Keep as the best checkpoint one whose validation logloss beats predicting the training
    # click rate for every row, whenever one does (see finalmlp.train.probability). Off by
    # default: measured in docs/reliability.md, it changed no pick once Platt is on.
    keep_better_than_base_rate: bool = False


class ExperimentConfig(StrictModel):
    data: DataConfig
    model: ModelConfig = FinalMLPConfig()
    train: TrainConfig = TrainConfig()
    select: SelectConfig | None = None  # finalmlp select (OptFS); unused by train

    @model_validator(mode="before")
    @classmethod
    def _model_train_defaults(cls, raw: Any) -> Any:
        """The model's own training defaults (MODEL_TRAIN_DEFAULTS) for every key ``train:``
        does not set: switching ``model.name`` switches them too, a set key always wins."""
        if not isinstance(raw, Mapping):
            return raw
        model = raw.get("model")
        name = model.get("name") if isinstance(model, Mapping) else getattr(model, "name", None)
        defaults = MODEL_TRAIN_DEFAULTS.get(str(name) if model is not None else "finalmlp")
        if defaults is None:
            return raw  # an unknown model: its validation says so
        train = raw.get("train", {})
        if isinstance(train, TrainConfig):
            missing = {k: v for k, v in defaults.items() if k not in train.model_fields_set}
            return {**raw, "train": train.model_copy(update=missing)}
        if isinstance(train, Mapping):
            return {**raw, "train": {**defaults, **train}}
        return raw

    @field_validator("model")
    @classmethod
    def _task_groups_by_index(cls, model: ModelConfig, info: ValidationInfo) -> ModelConfig:
        """HoME's task groups name tasks of ``data.labels``: checked here and kept as indices
        (the model is built from the model config and the task count alone)."""
        data = info.data.get("data")
        if isinstance(model, HoMEConfig) and model.task_groups is not None and data is not None:
            groups = resolve_task_groups(model.task_groups, data.task_names)
            return model.model_copy(update={"task_groups": groups})
        return model

    @model_validator(mode="after")
    def _contexts_exist(self) -> ExperimentConfig:
        self._check_monitor()
        tasks = self.data.task_names
        for name, weight in (self.train.task_weights or {}).items():
            if name not in tasks:
                raise ValueError(f"train.task_weights names task {name!r}; the tasks are {tasks}")
            if weight < 0:
                raise ValueError(f"train.task_weights[{name!r}] must be >= 0, got {weight}")
        if isinstance(self.model, FinalMLPConfig):
            names = self.data.feature_names
            for key in ("fs1_context", "fs2_context"):
                for ctx in getattr(self.model, key):
                    if ctx not in names:
                        raise ValueError(
                            f"model.{key} names {ctx!r}, which is not a feature; "
                            f"expected one of {names}"
                        )
        return self

    def _check_monitor(self) -> None:
        monitor = self.train.monitor
        if not monitor:
            raise ValueError("train.monitor is empty; use e.g. {auc: 1}")
        tasks = self.data.task_names
        for key, weight in monitor.items():
            task, metric = split_metric_key(key)
            if metric not in MONITOR_METRICS:
                raise ValueError(
                    f"train.monitor key {key!r}: the metric must be one of {list(MONITOR_METRICS)}"
                    + (f" (as in {tasks[0]}.auc)" if task is not None else "")
                )
            if task is not None and task not in tasks:
                raise ValueError(
                    f"train.monitor key {key!r} names task {task!r}, which is not a task; the "
                    f"tasks are {tasks} (data.labels)"
                )
            if metric == "logloss" and weight >= 0:
                raise ValueError(
                    "train.monitor is maximised, so logloss needs a negative weight "
                    "(e.g. {logloss: -1} or {auc: 1, logloss: -1})"
                )
            if metric == "gauc" and self.data.group is None:
                raise ValueError(
                    "train.monitor uses gauc, which needs data.group (the column to group by, "
                    "e.g. the user id)"
                )
