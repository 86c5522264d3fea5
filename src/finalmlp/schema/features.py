"""Feature configs: categorical, numeric and sequence columns, and the checks across them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from finalmlp.schema.base import StrictModel


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


def check_share(
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


def check_target(
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
