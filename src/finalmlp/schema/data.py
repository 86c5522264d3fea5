"""The ``data:`` section: files, labels (tasks), features, splits, format options, histories."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from finalmlp.schema.base import StrictModel
from finalmlp.schema.features import (
    Feature,
    SequenceFeature,
    check_share,
    check_target,
)
from finalmlp.schema.history import HistoryOptions, Join


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
            check_share(feat, {f.name: f for f in self.features})
        self._check_history()
        for feat in self.features:
            if isinstance(feat, SequenceFeature) and feat.target is not None:
                check_target(feat, {f.name: f for f in self.features})
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
