"""The shape of a model's input, shared by the feature processor and the models.

The processor decides it from the schema and the fitted vocabularies; the models are built from
it and know nothing of files or columns beyond these names. Field order of the concatenated
embedding ``e`` is: categorical fields, then numeric fields, then sequence fields, each in the
order of the config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Pooling:
    """How one sequence field becomes one embedding.

    Attributes:
        kind: ``mean``, ``sum`` or ``attention`` (DIN's target attention).
        target: with attention, the index in ``categorical_fields`` of the query field (it
            looks up the sequence's table); -1 otherwise.
        hidden_units: the attention unit's hidden widths.
        activation: the attention unit's activation, ``dice`` or ``prelu``.
        softmax: normalise the attention weights over the sequence.
    """

    kind: str = "mean"
    target: int = -1
    hidden_units: tuple[int, ...] = (64,)
    activation: str = "dice"
    softmax: bool = False


@dataclass(frozen=True)
class FieldLayout:
    """Fields of a batch and the embedding tables behind them.

    Attributes:
        table_sizes: rows of each embedding table (vocabulary size incl. padding 0 and OOV 1).
        categorical_fields: names of the columns of ``Batch.categorical`` (B, C).
        categorical_tables: table index of each categorical field (shared tables repeat).
        numeric_fields: names of the columns of ``Batch.numeric`` (B, D).
        sequence_fields: names of ``Batch.sequences`` entries, each (B, L).
        sequence_tables: table index of each sequence field.
        sequence_pooling: how each sequence field is pooled (empty: all mean).
    """

    table_sizes: tuple[int, ...]
    categorical_fields: tuple[str, ...]
    categorical_tables: tuple[int, ...]
    numeric_fields: tuple[str, ...]
    sequence_fields: tuple[str, ...] = ()
    sequence_tables: tuple[int, ...] = ()
    sequence_pooling: tuple[Pooling, ...] = ()

    def pooling(self, index: int) -> Pooling:
        """The pooling of sequence field ``index``."""
        return self.sequence_pooling[index] if self.sequence_pooling else Pooling()

    @property
    def field_names(self) -> tuple[str, ...]:
        return self.categorical_fields + self.numeric_fields + self.sequence_fields

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    def field_index(self, name: str) -> int:
        try:
            return self.field_names.index(name)
        except ValueError:
            raise KeyError(f"no field {name!r}; fields are {list(self.field_names)}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: list(v) for k, v in asdict(self).items()}
        out["sequence_pooling"] = [
            {**asdict(p), "hidden_units": list(p.hidden_units)} for p in self.sequence_pooling
        ]
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FieldLayout:
        fields = {k: tuple(v) for k, v in raw.items() if k != "sequence_pooling"}
        pooling = tuple(
            Pooling(**{**p, "hidden_units": tuple(p["hidden_units"])})
            for p in raw.get("sequence_pooling", ())
        )
        return cls(**fields, sequence_pooling=pooling)
