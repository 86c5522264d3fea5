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

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class SequenceFeature(FeatureBase):
    """A multi-valued column such as ``a^b^c`` or ``Action|Comedy``: masked mean of embeddings."""

    type: Literal["sequence"] = "sequence"
    separator: str = Field("^", min_length=1)
    max_len: int = Field(20, ge=1)
    truncate: Literal["head", "tail"] = "head"  # keep the first or the last max_len items
    min_count: int = Field(1, ge=1)
    share_embedding: str | None = None


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
    name. ``libffm`` lines (``label field:idx:val``) carry the field number themselves and need
    neither; their fields are named ``f0, f1, ...`` unless ``field_names`` are given.
    """

    fields: list[FieldRange] = Field(default_factory=list)
    field_map: Path | None = None
    field_names: list[str] = Field(default_factory=list)


class SplitOptions(StrictModel):
    """Random split of ``train`` into train/valid/test when those files are not given."""

    valid_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 2023


class SyntheticOptions(StrictModel):
    """The built-in CTR-like generator (see finalmlp.data.synthetic)."""

    num_rows: int = Field(200_000, ge=100)
    num_categorical: int = Field(8, ge=2)
    num_numeric: int = Field(3, ge=0)
    max_cardinality: int = Field(10_000, ge=10)
    seed: int = 2023


class DataConfig(StrictModel):
    recipe: str | None = None
    format: Literal["csv", "tsv", "parquet", "libsvm", "libffm", "synthetic"] = "csv"
    train: Path | None = None
    valid: Path | None = None
    test: Path | None = None
    has_header: bool = True
    columns: list[str] | None = None  # column names of a file without header
    separator: str | None = None  # defaults: "," for csv, "\t" for tsv
    label: str = "label"
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

    @field_validator("label_map", mode="before")
    @classmethod
    def _label_map_keys_are_text(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        for key in value:
            if isinstance(key, bool):  # YAML reads an unquoted yes/no/true/false as a boolean
                raise ValueError(
                    f"label_map key {key!r} was read as a boolean; quote it in the YAML, "
                    "e.g. {'yes': 1, 'no': 0}"
                )
        return {
            str(key).strip() if isinstance(key, int | str) else key: v for key, v in value.items()
        }

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        names = [f.name for f in self.features]
        if not self.features:
            raise ValueError("features must list at least one feature")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique, got duplicates {dupes}")
        if self.label in {f.column for f in self.features}:
            raise ValueError(
                f"the label column {self.label!r} is also a feature: the model would see the "
                "answer; remove it from features"
            )
        if self.columns and len(set(self.columns)) != len(self.columns):
            dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
            raise ValueError(f"data.columns must be unique, got duplicates {dupes}")
        for feat in self.features:
            _check_share(feat, {f.name: f for f in self.features})
        if self.format != "synthetic" and self.train is None:
            raise ValueError("data.train is required (path of the training file)")
        if self.format in ("csv", "tsv") and not self.has_header and not self.columns:
            raise ValueError("a file without header needs data.columns (the column names)")
        if self.label_map is not None and not self.label_map:
            raise ValueError("data.label_map is empty; map each raw label to 0 or 1, or remove it")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


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


# ----------------------------------------------------------------------------- models
class MLPConfig(StrictModel):
    hidden_units: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False


class FinalMLPConfig(StrictModel):
    """FinalMLP (Mao et al., AAAI 2023). The MLP and gate widths default to the paper's Frappe_x1
    settings; heads (1) and gate contexts (none) default to the plainest form: set them."""

    name: Literal["finalmlp"] = "finalmlp"
    embedding_dim: int = Field(10, gt=0)
    mlp1: MLPConfig = MLPConfig(hidden_units=[400], dropout=0.4, batch_norm=True)
    mlp2: MLPConfig = MLPConfig(hidden_units=[100], dropout=0.4, batch_norm=True)
    use_fs: bool = True
    fs_hidden_units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [400])
    fs1_context: list[str] = Field(default_factory=list)
    fs2_context: list[str] = Field(default_factory=list)
    num_heads: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> FinalMLPConfig:
        for key in ("fs1_context", "fs2_context"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"{key} lists a feature twice: {names}")
        d1, d2 = self.mlp1.hidden_units[-1], self.mlp2.hidden_units[-1]
        if d1 % self.num_heads or d2 % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must divide both stream widths "
                f"(mlp1 ends with {d1}, mlp2 with {d2}); pick a common divisor such as "
                f"{_common_divisors(d1, d2)}"
            )
        return self


class DualMLPConfig(StrictModel):
    """DualMLP: two MLPs over the same embeddings, each to one logit, summed."""

    name: Literal["dualmlp"] = "dualmlp"
    embedding_dim: int = Field(10, gt=0)
    mlp1: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)
    mlp2: MLPConfig = MLPConfig(hidden_units=[400], dropout=0.2, batch_norm=True)


class LRConfig(StrictModel):
    """Logistic regression over the same fields: the baseline."""

    name: Literal["lr"] = "lr"


# ---- model zoo: FM, DNN, Wide&Deep, DeepFM, DCN, DCNv2
# Defaults are the BARS Frappe_x1 tuned settings (configs/frappe_x1_<name>.yaml cite the source).
class FMConfig(StrictModel):
    """FM (Rendle, ICDM 2010): first-order weights plus pairwise inner products of embeddings."""

    name: Literal["fm"] = "fm"
    embedding_dim: int = Field(10, gt=0)


class DNNConfig(StrictModel):
    """DNN: one MLP over the flat embeddings, to one logit."""

    name: Literal["dnn"] = "dnn"
    embedding_dim: int = Field(10, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class WideDeepConfig(StrictModel):
    """Wide & Deep (Cheng et al., DLRS 2016): logistic regression plus a DNN logit."""

    name: Literal["widedeep"] = "widedeep"
    embedding_dim: int = Field(10, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.6, batch_norm=True)


class DeepFMConfig(StrictModel):
    """DeepFM (Guo et al., IJCAI 2017): FM and a DNN over the same embeddings, logits summed."""

    name: Literal["deepfm"] = "deepfm"
    embedding_dim: int = Field(10, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class DCNConfig(StrictModel):
    """DCN (Wang et al., ADKDD 2017): a cross network beside a DNN, concatenated to one logit."""

    name: Literal["dcn"] = "dcn"
    embedding_dim: int = Field(10, gt=0)
    num_cross_layers: int = Field(3, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class LowRankMixtureConfig(StrictModel):
    """DCNv2's cross layers as a mixture of low-rank experts (the paper's DCN-Mix)."""

    low_rank: int = Field(32, gt=0)
    num_experts: int = Field(4, gt=0)


class DCNv2Config(StrictModel):
    """DCNv2 (Wang et al., WWW 2021): full-rank cross network, then (stacked) or beside
    (parallel) a DNN, or alone (crossnet_only; ``mlp`` is then unused). Set
    ``low_rank_mixture`` for the mixture of low-rank experts instead of full-rank layers."""

    name: Literal["dcnv2"] = "dcnv2"
    embedding_dim: int = Field(10, gt=0)
    structure: Literal["stacked", "parallel", "crossnet_only"] = "parallel"
    num_cross_layers: int = Field(4, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.4, batch_norm=True)
    low_rank_mixture: LowRankMixtureConfig | None = None


# ---- model zoo: xDeepFM, AutoInt+, FinalNet
# Defaults are the BARS Frappe_x1 tuned settings (configs/frappe_x1_<name>.yaml cite the source).
class XDeepFMConfig(StrictModel):
    """xDeepFM (Lian et al., KDD 2018): linear part + CIN + DNN, logits summed. Every CIN layer
    keeps all its feature maps (no split-half, as FuxiCTR); ``mlp: null`` drops the DNN."""

    name: Literal["xdeepfm"] = "xdeepfm"
    embedding_dim: int = Field(10, gt=0)
    cin_hidden_units: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64], min_length=1
    )
    mlp: MLPConfig | None = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class AutoIntConfig(StrictModel):
    """AutoInt+ (Song et al., CIKM 2019): self-attention layers over the field embeddings plus a
    DNN (``mlp: null``: plain AutoInt), optionally a first-order part (``use_wide``).
    ``attention_dim`` is a layer's output width, all heads together (as FuxiCTR)."""

    name: Literal["autoint"] = "autoint"
    embedding_dim: int = Field(10, gt=0)
    num_layers: int = Field(5, gt=0)
    attention_dim: int = Field(128, gt=0)
    num_heads: int = Field(4, gt=0)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # on the attention weights
    use_residual: bool = True
    use_scale: bool = True  # scores / sqrt(attention_dim / num_heads)
    layer_norm: bool = True
    use_wide: bool = False
    mlp: MLPConfig | None = MLPConfig(hidden_units=[400, 400, 400], dropout=0.1, batch_norm=True)

    @model_validator(mode="after")
    def _heads_divide(self) -> AutoIntConfig:
        if self.attention_dim % self.num_heads:
            divisors = [h for h in range(1, self.attention_dim + 1) if self.attention_dim % h == 0]
            raise ValueError(
                f"num_heads={self.num_heads} must divide attention_dim={self.attention_dim}; "
                f"pick one of {divisors[:8]} or change attention_dim"
            )
        return self


class FinalNetConfig(StrictModel):
    """FinalNet (Zhu et al., SIGIR 2023): MLP-like blocks of factorized interaction layers.
    ``1B``: block1 alone (``block2`` is then unused); ``2B``: block1 (on the gated embeddings)
    and block2 (on the plain ones), logits averaged, trained with self-distillation.
    ``residual_type: concat`` needs even widths (half the layer is the product)."""

    name: Literal["finalnet"] = "finalnet"
    embedding_dim: int = Field(10, gt=0)
    block_type: Literal["1B", "2B"] = "2B"
    block1: MLPConfig = MLPConfig(hidden_units=[400, 400], dropout=0.1, batch_norm=True)
    block2: MLPConfig = MLPConfig(hidden_units=[400], dropout=0.1, batch_norm=True)
    use_feature_gating: bool = True  # block1 only
    residual_type: Literal["concat", "sum"] = "concat"

    @model_validator(mode="after")
    def _blocks_fit(self) -> FinalNetConfig:
        blocks = ("block1", "block2") if self.block_type == "2B" else ("block1",)
        for key in blocks if self.residual_type == "concat" else ():
            odd = [u for u in getattr(self, key).hidden_units if u % 2]
            if odd:
                raise ValueError(
                    f"{key}.hidden_units has odd widths {odd}; residual_type 'concat' splits "
                    "each layer in two halves: use even widths or residual_type: sum"
                )
        return self


ModelConfig = Annotated[
    FinalMLPConfig
    | DualMLPConfig
    | LRConfig
    | FMConfig
    | DNNConfig
    | WideDeepConfig
    | DeepFMConfig
    | DCNConfig
    | DCNv2Config
    | XDeepFMConfig
    | AutoIntConfig
    | FinalNetConfig,
    Field(discriminator="name"),
]


def _common_divisors(a: int, b: int) -> list[int]:
    return [h for h in range(1, min(a, b) + 1) if a % h == 0 and b % h == 0][:8]


# ----------------------------------------------------------------------------- training
MonitorMetric = Literal["auc", "logloss", "gauc"]


def _monitor_auc() -> dict[MonitorMetric, float]:
    return {"auc": 1.0}


class TrainConfig(StrictModel):
    batch_size: int = Field(4096, gt=0)
    eval_batch_size: int = Field(16384, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    embedding_l2: float = Field(0.0, ge=0)  # lambda/2 * ||W||^2 over whole embedding tables
    net_l2: float = Field(0.0, ge=0)  # same over the network's weights and biases
    max_grad_norm: float | None = Field(10.0, gt=0)
    max_epochs: int = Field(100, ge=1)
    eval_every_steps: int | None = Field(None, gt=0)  # default: once per epoch
    # With --out: a checkpoint at every epoch end, and every N steps when set (for --resume).
    checkpoint_every_steps: int | None = Field(None, gt=0)
    # The monitored value is sum(weight * metric); {auc: 1} as in BARS, {auc: 1, logloss: -1}
    # for the mix FuxiCTR users also use. Higher is better.
    monitor: dict[MonitorMetric, float] = Field(default_factory=_monitor_auc)
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
    # (calibration.json) and applied wherever it scores (see finalmlp.calibration).
    calibration: Literal["none", "platt", "isotonic"] = "none"


class ExperimentConfig(StrictModel):
    data: DataConfig
    model: ModelConfig = FinalMLPConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _contexts_exist(self) -> ExperimentConfig:
        if not self.train.monitor:
            raise ValueError("train.monitor is empty; use e.g. {auc: 1}")
        if self.train.monitor.get("logloss", -1.0) >= 0:
            raise ValueError(
                "train.monitor is maximised, so logloss needs a negative weight "
                "(e.g. {logloss: -1} or {auc: 1, logloss: -1})"
            )
        if "gauc" in self.train.monitor and self.data.group is None:
            raise ValueError(
                "train.monitor uses gauc, which needs data.group (the column to group by, "
                "e.g. the user id)"
            )
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
