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
class FieldLayout:
    """Fields of a batch and the embedding tables behind them.

    Attributes:
        table_sizes: rows of each embedding table (vocabulary size incl. padding 0 and OOV 1).
        categorical_fields: names of the columns of ``Batch.categorical`` (B, C).
        categorical_tables: table index of each categorical field (shared tables repeat).
        numeric_fields: names of the columns of ``Batch.numeric`` (B, D).
        sequence_fields: names of ``Batch.sequences`` entries, each (B, L).
        sequence_tables: table index of each sequence field.
    """

    table_sizes: tuple[int, ...]
    categorical_fields: tuple[str, ...]
    categorical_tables: tuple[int, ...]
    numeric_fields: tuple[str, ...]
    sequence_fields: tuple[str, ...] = ()
    sequence_tables: tuple[int, ...] = ()

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
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FieldLayout:
        return cls(**{k: tuple(v) for k, v in raw.items()})
