"""Typed configuration: which column is what, which model, how to train.

A config file is YAML with three sections, parsed once at the edge into these pydantic models
(``extra="forbid"``: a misspelt key is an error, never silently ignored)::

    data:
      recipe: frappe_x1            # optional built-in defaults (see finalmlp.data.recipes)
      train: data/train.csv        # paths are relative to the config file
      valid: data/valid.csv
      test: data/test.csv
      label: label
      features:
        - {name: user, type: categorical, min_count: 2}
        - {name: price, type: numeric, transform: log}
        - {name: genres, type: sequence, separator: "|", max_len: 5}
    model: {name: finalmlp, embedding_dim: 10, num_heads: 5, ...}
    train: {batch_size: 4096, learning_rate: 1.0e-3, patience: 2, ...}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from finalmlp.schema.base import StrictModel
from finalmlp.schema.history import Condition, HistoryOptions, Join
from finalmlp.schema.models import (
    MODEL_TRAIN_DEFAULTS,
    AutoIntConfig,
    DCNConfig,
    DCNv2Config,
    DeepFMConfig,
    DINConfig,
    DNNConfig,
    DualMLPConfig,
    FinalMLPConfig,
    FinalNetConfig,
    FMConfig,
    HoMEConfig,
    LowRankMixtureConfig,
    LRConfig,
    MLPConfig,
    MMoEConfig,
    ModelConfig,
    PLEConfig,
    ShareBottomConfig,
    WideDeepConfig,
    XDeepFMConfig,
    resolve_task_groups,
)
from finalmlp.schema.select import SelectConfig


# ----------------------------------------------------------------------------- features
class FeatureBase(StrictModel):
    """What every feature has: a name, and the column it reads (``source``, default the name)."""

    name: str
    source: str | None = None  # column in the file; defaults to ``name``
    # Scoring a record without this field is an error (else it gets the fill value).
    required: bool = False

    @property
    def column(self) -> str:
        return self.source or self.name


class CategoricalFeature(FeatureBase):
    """A categorical column: each distinct value gets an id and an embedding row.

    Ids: 0 is padding, 1 is out-of-vocabulary (values seen fewer than ``min_count`` times in
    train, and values never seen), 2.. are the vocabulary. With ``hash_buckets`` the value is
    hashed (stable across processes and machines) into that many buckets instead.
    """

    type: Literal["categorical"] = "categorical"
    min_count: int = Field(1, ge=1)
    hash_buckets: int | None = Field(None, ge=1)
    fill_value: str = ""  # missing values become this token
    share_embedding: str | None = None  # name of another feature whose table this one uses

    @model_validator(mode="after")
    def _hashing_has_no_vocabulary(self) -> CategoricalFeature:
        if self.hash_buckets is not None and self.min_count != 1:
            raise ValueError(
                f"feature {self.name!r}: min_count applies to a vocabulary, not to "
                "hash_buckets; set one of them"
            )
        return self


class NumericFeature(FeatureBase):
    """A numeric column: embedded as value x a learned vector, or bucketized into a categorical.

    ``bucketize: quantile`` cuts at train quantiles into ``num_buckets`` ids; ``bucketize:
    log_square`` is the standard Criteo recipe: ``floor(log(x)^2)`` for x > 2, else x, then a
    vocabulary with ``min_count``.
    """

    type: Literal["numeric"] = "numeric"
    fill_value: float = 0.0
    transform: Literal["none", "standard", "minmax", "log"] = "none"
    bucketize: Literal["quantile", "log_square"] | None = None
    num_buckets: int = Field(10, ge=2)
    min_count: int = Field(1, ge=1)  # for log_square buckets

    @model_validator(mode="after")
    def _no_ignored_settings(self) -> NumericFeature:
        if self.bucketize is not None and self.transform != "none":
            raise ValueError(
                f"feature {self.name!r}: transform is not used when bucketize is set; "
                "remove one of them"
            )
        if self.bucketize != "log_square" and self.min_count != 1:
            raise ValueError(
                f"feature {self.name!r}: min_count applies only with bucketize: log_square"
            )
        return self


class AttentionOptions(StrictModel):
    """DIN's local activation unit (Zhou et al., KDD 2018, Sec. 4.3): an MLP over
    ``[q, k, q - k, q * k]`` giving one weight per behaviour ``k`` for the target ``q``.

    Attributes:
        hidden_units: widths of the unit's hidden layers (FuxiCTR's default: [64]).
        activation: ``dice`` (the paper's) or ``prelu``.
        softmax: normalise the weights over the history; off by default, as in the paper,
            which keeps the intensity of interest.
    """

    hidden_units: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64], min_length=1
    )
    activation: Literal["dice", "prelu"] = "dice"
    softmax: bool = False


class SequenceFeature(FeatureBase):
    """A multi-valued column such as ``a^b^c`` or ``Action|Comedy``: masked mean of embeddings.

    With ``history: <column>`` the items are that column's values over the user's earlier
    behaviour events (``data.history``), built when training; a file to score, or a served
    record, gives them itself in the feature's column (a list, or separator-joined text). A
    history keeps the most recent ``data.history.max_len`` items (``truncate: tail``).
    """

    type: Literal["sequence"] = "sequence"
    separator: str = Field("^", min_length=1)
    max_len: int = Field(20, ge=1)
    truncate: Literal["head", "tail"] = "head"  # keep the first or the last max_len items
    min_count: int = Field(1, ge=1)
    share_embedding: str | None = None
    history: str | None = None  # event column whose earlier values form this sequence
    # How the items become one field embedding: masked mean (default), masked sum, or DIN's
    # target attention, weighting each item by its relevance to ``target`` (a categorical
    # feature sharing this sequence's table, e.g. the candidate item).
    pooling: Literal["mean", "sum", "attention"] = "mean"
    target: str | None = None
    attention: AttentionOptions | None = None  # default AttentionOptions() with attention

    @model_validator(mode="after")
    def _attention_settings(self) -> SequenceFeature:
        if self.pooling == "attention" and self.target is None:
            raise ValueError(
                f"feature {self.name!r} pools by attention, which needs target: the categorical "
                "feature (sharing its table) whose embedding is the query, e.g. the candidate item"
            )
        if self.pooling != "attention" and (self.target or self.attention):
            raise ValueError(
                f"feature {self.name!r} sets target/attention, which only pooling: attention "
                "uses; set pooling: attention or remove them"
            )
        return self


Feature = Annotated[
    CategoricalFeature | NumericFeature | SequenceFeature, Field(discriminator="type")
]


# ----------------------------------------------------------------------------- data
class FieldRange(StrictModel):
    """Indices ``start <= idx < end`` of a libsvm file belong to field ``name``."""

    name: str
    start: int = Field(ge=0)
    end: int = Field(gt=0)


class LibsvmOptions(StrictModel):
    """How to turn ``label idx:val ...`` lines into named fields.

    Give ``fields`` as index ranges, or ``field_map``: a JSON file mapping each index to a field
    name (``{"0": "user"}``), or a ``featindex.txt`` (``field:value<TAB>index`` per line).
    ``libffm`` lines (``label field:idx:val``) carry the field number themselves and need
    neither; their fields are named ``f0, f1, ...`` unless ``field_names`` are given.

    A field read by a ``sequence`` feature takes every index of a line. A field read by a
    categorical or numeric feature holds one; a line with several follows ``multi_valued``:
    ``error`` (a bad row naming the file, line and field), or keep the ``first`` or ``last``.
    """

    fields: list[FieldRange] = Field(default_factory=list)
    field_map: Path | None = None
    field_names: list[str] = Field(default_factory=list)
    multi_valued: Literal["error", "first", "last"] = "error"


class SplitOptions(StrictModel):
    """Random split of ``train`` into train/valid/test when those files are not given."""

    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 2023
    # A numeric time column: the latest rows become test, the ones before them valid (ties
    # stay together in file order); default: at random.
    by: str | None = None


class SyntheticOptions(StrictModel):
    """The built-in CTR-like generator (see finalmlp.data.synthetic)."""

    num_rows: int = Field(200_000, ge=100)
    num_categorical: int = Field(8, ge=2)
    num_numeric: int = Field(3, ge=0)
    max_cardinality: int = Field(10_000, ge=10)
    seed: int = 2023
    # A second task: a ``conversion`` column, observed (0/1) on clicked rows only and blank
    # elsewhere, drawn from a teacher correlated with the click teacher (multi-task demos).
    conversion: bool = False
    # An event log instead (user, time, item, category, label) whose label is driven by how
    # relevant the item is to the user's earlier clicks (see finalmlp.data.synthetic_history).
    histories: bool = False


class StreamingOptions(StrictModel):
    """Out-of-core training (docs/performance.md): ``train`` is a folder or glob of files read
    one at a time, encoded once into Parquet shards in the data cache and streamed through a
    shuffle window while training. valid/test stay in memory."""

    buffer_rows: int = Field(1_000_000, ge=1)  # rows of the shuffle window
    block_rows: int = Field(65_536, ge=1)  # rows per row group of the encoded shards


class LabelSpec(StrictModel):
    """One prediction task: a 0/1 target read from a column.

    ``data.labels: [click, purchase]`` is shorthand for ``[{name: click}, {name: purchase}]``.
    A blank label is a missing label: that row is left out of this task's loss and metrics
    only (e.g. conversions observed on part of the traffic).

    Attributes:
        name: the task's name (metric keys ``<name>.auc``, score column ``score_<name>``).
        column: the column holding the label (default: ``name``).
        label_map: raw label text -> 0/1 (default: ``data.label_map``, else 0/1 or -1/1).
        weight: the task's weight in the training loss (``train.task_weights`` overrides it).
    """

    name: str = Field(min_length=1)
    column: str | None = None
    label_map: dict[str, Literal[0, 1]] | None = None
    weight: float = Field(1.0, ge=0)

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map_keys_are_text(cls, value: object) -> object:
        return _text_label_map(value)

    @property
    def source(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class Task:
    """A task as the data layer uses it (see :attr:`DataConfig.tasks`).

    Attributes:
        name: the task's name.
        column: the file column holding its raw label.
        frame_column: the column of a read frame that holds its parsed 0/1 (null: missing)
            label: ``column`` itself, unless several tasks read that column.
        label_map: raw text -> 0/1, or None.
        weight: loss weight from the data config.
        allow_missing: blank labels are masked (``data.labels``), not bad rows (``data.label``).
    """

    name: str
    column: str
    frame_column: str
    label_map: Mapping[str, int] | None
    weight: float
    allow_missing: bool


SplitName = Literal["train", "valid", "test"]
HeaderSetting = bool | Literal["auto"]


class DataConfig(StrictModel):
    recipe: str | None = None
    format: Literal["csv", "tsv", "parquet", "libsvm", "libffm", "synthetic"] = "csv"
    train: Path | None = None
    valid: Path | None = None
    test: Path | None = None
    # Whether CSV/TSV files start with a header line: true, false, auto (detected per file),
    # or per split, e.g. {train: true, valid: false}; see finalmlp.data.headers.
    has_header: HeaderSetting | dict[SplitName, HeaderSetting] = "auto"
    columns: list[str] | None = None  # column names of a file without header
    separator: str | None = None  # defaults: "," for csv, "\t" for tsv
    label: str = "label"
    # Several tasks per row (multi-task): names or {name, column, label_map, weight}; replaces
    # ``label``. Blank labels are masked per task.
    labels: list[LabelSpec] | None = None
    group: str | None = None  # group column (e.g. user) for group AUC
    features: list[Feature]
    split: SplitOptions | None = None
    libsvm: LibsvmOptions | None = None
    synthetic: SyntheticOptions | None = None
    cache_dir: Path | None = None  # encoded-data cache; default ~/.cache/finalmlp
    # Bad rows of train/valid/test files (see docs/reliability.md): stop at the first
    # (`error`), drop them with a warning (`skip`), or drop them and write each with its line
    # and reason to `<data file name>.bad_rows.csv` (`quarantine`), beside the data file or in
    # quarantine_dir. Scoring always stops at the first bad row.
    on_bad_rows: Literal["error", "skip", "quarantine"] = "error"
    quarantine_dir: Path | None = None
    # Raw label text -> 0/1, e.g. {"no": 0, "yes": 1}; without it labels must be 0/1 or -1/1.
    label_map: dict[str, Literal[0, 1]] | None = None
    streaming: StreamingOptions | None = None
    # Per-row behaviour histories from the rows' own events (see HistoryOptions).
    history: HistoryOptions | None = None
    # Lookup tables joined onto the rows of the splits (item side fields), in order.
    join: list[Join] = Field(default_factory=list)

    @field_validator("has_header", mode="before")
    @classmethod
    def _header_setting(cls, value: object) -> object:
        usage = "expected true, false, auto, or one per split, e.g. {train: true, valid: false}"
        settings = value.values() if isinstance(value, dict) else [value]
        if isinstance(value, dict) and not set(value) <= {"train", "valid", "test"}:
            unknown = sorted(set(map(str, value)) - {"train", "valid", "test"})
            raise ValueError(f"splits are train, valid and test, got {unknown}; {usage}")
        if not all(isinstance(v, bool) or v == "auto" for v in settings):
            raise ValueError(usage)
        return value

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map_keys_are_text(cls, value: object) -> object:
        return _text_label_map(value)

    @field_validator("labels", mode="before")
    @classmethod
    def _label_names(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @property
    def tasks(self) -> list[Task]:
        """The prediction tasks, in order: ``data.labels``, or the one task of ``data.label``."""
        if self.labels is None:
            return [Task(self.label, self.label, self.label, self.label_map, 1.0, False)]
        sources = [spec.source for spec in self.labels]
        return [
            Task(
                spec.name,
                spec.source,
                spec.source if sources.count(spec.source) == 1 else f"{spec.source}#{spec.name}",
                spec.label_map if spec.label_map is not None else self.label_map,
                spec.weight,
                True,
            )
            for spec in self.labels
        ]

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    @property
    def label_columns(self) -> list[str]:
        """The file columns holding labels, each once."""
        return list(dict.fromkeys(task.column for task in self.tasks))

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        names = [f.name for f in self.features]
        if not self.features:
            raise ValueError("features must list at least one feature")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique, got duplicates {dupes}")
        self._check_labels()
        if self.columns and len(set(self.columns)) != len(self.columns):
            dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise ValueError(f"data.columns must be unique, got duplicates {dupes}")
        for feat in self.features:
            _check_share(feat, {f.name: f for f in self.features})
        self._check_history()
        for feat in self.features:
            if isinstance(feat, SequenceFeature) and feat.target is not None:
                _check_target(feat, {f.name: f for f in self.features})
        if self.format != "synthetic" and self.train is None:
            raise ValueError("data.train is required (path of the training file)")
        train_header = (
            self.has_header.get("train", "auto")
            if isinstance(self.has_header, dict)
            else self.has_header
        )
        if self.format in ("csv", "tsv") and train_header is False and not self.columns:
            raise ValueError("a file without header needs data.columns (the column names)")
        if self.label_map is not None and not self.label_map:
            raise ValueError("data.label_map is empty; map each raw label to 0 or 1, or remove it")
        if self.streaming is not None:
            if self.format not in ("csv", "tsv", "parquet"):
                raise ValueError(
                    f"data.streaming reads csv, tsv or parquet files, not {self.format}; "
                    "convert the data to Parquet, or remove data.streaming"
                )
            if self.valid is None or self.test is None:
                raise ValueError(
                    "data.streaming needs data.valid and data.test files (a stream is not split "
                    "at random); give both"
                )
        return self

    def _check_history(self) -> None:
        """History features need data.history; they take its max_len and keep the tail."""
        history = [f for f in self.features if isinstance(f, SequenceFeature) and f.history]
        if self.history is None:
            if history:
                raise ValueError(
                    f"feature {history[0].name!r} sets history: {history[0].history!r}, which "
                    "needs data.history (the user and time columns); add it, or remove history"
                )
            return
        if not history:
            raise ValueError(
                "data.history is set but no sequence feature sets history: <column>; add one "
                "(e.g. {name: hist_item, type: sequence, history: item}) or remove data.history"
            )
        if self.streaming is not None:
            raise ValueError("data.history cannot be built with data.streaming; remove one")
        if self.format in ("libsvm", "libffm"):
            raise ValueError(f"data.history needs named columns, which {self.format} lacks")
        features = list(self.features)
        for i, feat in enumerate(features):
            if not (isinstance(feat, SequenceFeature) and feat.history):
                continue
            if "max_len" in feat.model_fields_set and feat.max_len != self.history.max_len:
                raise ValueError(
                    f"history feature {feat.name!r} sets max_len {feat.max_len}; its length "
                    f"is data.history.max_len ({self.history.max_len}): remove max_len"
                )
            if feat.truncate == "head" and "truncate" in feat.model_fields_set:
                raise ValueError(
                    f"history feature {feat.name!r} keeps the most recent items "
                    "(truncate: tail); remove truncate: head"
                )
            update = {"max_len": self.history.max_len, "truncate": "tail"}
            features[i] = feat.model_copy(update=update)
        object.__setattr__(self, "features", features)

    def _check_labels(self) -> None:
        if self.labels is not None:
            if "label" in self.model_fields_set and self.label != "label":  # a saved run has both
                raise ValueError(
                    "data.label and data.labels are both set; use data.labels for several "
                    "tasks (or data.label for one)"
                )
            if not self.labels:
                raise ValueError("data.labels is empty; name at least one label column")
            if self.format in ("libsvm", "libffm"):
                raise ValueError(
                    f"{self.format} lines carry one label, so data.labels (several tasks) cannot "
                    "be read from them; use data.label, or convert the data to CSV or Parquet"
                )
            names = [spec.name for spec in self.labels]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"task names in data.labels must be unique, got {dupes} twice")
            for name in names:
                if "." in name:
                    raise ValueError(
                        f"task name {name!r} holds a '.', which separates task and metric in "
                        f"metric names ({name}.auc); rename it"
                    )
        features = {f.column for f in self.features}
        for column in self.label_columns:
            if column in features:
                raise ValueError(
                    f"the label column {column!r} is also a feature: the model would see the "
                    "answer; remove it from features"
                )
        if self.group is not None and self.group in self.label_columns:
            raise ValueError(f"data.group {self.group!r} is a label column; pick the user column")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def _text_label_map(value: object) -> object:
    """A label map's keys as stripped text (YAML reads 1 and yes as numbers and booleans)."""
    if not isinstance(value, dict):
        return value
    for key in value:
        if isinstance(key, bool):  # YAML reads an unquoted yes/no/true/false as a boolean
            raise ValueError(
                f"label_map key {key!r} was read as a boolean; quote it in the YAML, "
                "e.g. {'yes': 1, 'no': 0}"
            )
    return {str(key).strip() if isinstance(key, int | str) else key: v for key, v in value.items()}


def _check_share(
    feat: CategoricalFeature | NumericFeature | SequenceFeature,
    by_name: dict[str, CategoricalFeature | NumericFeature | SequenceFeature],
) -> None:
    """A shared embedding points at a feature that owns a table, and sets no table options."""
    share = getattr(feat, "share_embedding", None)
    if share is None or share == feat.name:
        return
    if share not in by_name:
        raise ValueError(
            f"feature {feat.name!r} shares the embedding of {share!r}, "
            f"which is not a feature; expected one of {list(by_name)}"
        )
    target = by_name[share]
    if not isinstance(
        target, CategoricalFeature | SequenceFeature
    ) or target.share_embedding not in (
        None,
        target.name,
    ):
        raise ValueError(
            f"feature {feat.name!r} shares the embedding of {share!r}, which has no "
            "table of its own; point share_embedding at a categorical or sequence "
            "feature that does not share another's"
        )
    if feat.min_count != 1 or getattr(feat, "hash_buckets", None) is not None:
        raise ValueError(
            f"feature {feat.name!r} shares the table of {share!r}: set min_count or "
            f"hash_buckets on {share!r}, not on {feat.name!r}"
        )


def _check_target(
    feat: SequenceFeature,
    by_name: dict[str, CategoricalFeature | NumericFeature | SequenceFeature],
) -> None:
    """An attention target is a categorical feature looking up the sequence's table."""
    target = by_name.get(feat.target or "")
    if target is None:
        raise ValueError(
            f"feature {feat.name!r} pools by attention over target {feat.target!r}, which is "
            f"not a feature; expected one of {list(by_name)}"
        )
    if not isinstance(target, CategoricalFeature):
        raise ValueError(
            f"the attention target {target.name!r} of {feat.name!r} is a {target.type} "
            "feature; it must be categorical (one item per row)"
        )
    mine = feat.share_embedding or feat.name
    theirs = target.share_embedding or target.name
    if mine != theirs:
        raise ValueError(
            f"the attention target {target.name!r} of {feat.name!r} does not share its table "
            f"({feat.name!r} looks up {mine!r}, {target.name!r} looks up {theirs!r}); set "
            f"share_embedding: {theirs} on {feat.name!r}, or pick a target of table {mine!r}"
        )


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


__all__ = [
    "MONITOR_METRICS",
    "AttentionOptions",
    "AutoIntConfig",
    "CategoricalFeature",
    "Condition",
    "DCNConfig",
    "DCNv2Config",
    "DINConfig",
    "DNNConfig",
    "DataConfig",
    "DeepFMConfig",
    "DualMLPConfig",
    "ExperimentConfig",
    "FMConfig",
    "Feature",
    "FeatureBase",
    "FieldRange",
    "FinalMLPConfig",
    "FinalNetConfig",
    "HeaderSetting",
    "HistoryOptions",
    "HoMEConfig",
    "Join",
    "LRConfig",
    "LabelSpec",
    "LibsvmOptions",
    "LowRankMixtureConfig",
    "MLPConfig",
    "MMoEConfig",
    "ModelConfig",
    "MonitorMetric",
    "NumericFeature",
    "PLEConfig",
    "SelectConfig",
    "SequenceFeature",
    "ShareBottomConfig",
    "SplitName",
    "SplitOptions",
    "StreamingOptions",
    "StrictModel",
    "SyntheticOptions",
    "Task",
    "TrainConfig",
    "WideDeepConfig",
    "XDeepFMConfig",
    "split_metric_key",
]
