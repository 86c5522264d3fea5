"""Score raw records with a run directory: validation, encoding, model, probabilities.

The one scoring path for batch files and the HTTP service: the exact FeatureProcessor that
training fitted encodes the records, so a value means the same thing at serving time as at
training time. Unseen category values score through the OOV id; a missing optional field gets
its fill value; a record that cannot be scored raises :class:`RecordError` naming the record
and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from finalmlp.bundle import Run, load_run
from finalmlp.data.split import EncodedSplit
from finalmlp.errors import FinalMLPError
from finalmlp.features.processor import EncodedFeatures
from finalmlp.inference import predict_proba
from finalmlp.schema import NumericFeature, SequenceFeature

UnknownFields = Literal["reject", "ignore"]


class RecordError(FinalMLPError, ValueError):
    """A record that cannot be scored: which record, which field, what was wrong."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(f"record {index}, field {field!r}: {message}")
        self.index = index
        self.field = field
        self.detail = message


@dataclass(frozen=True)
class InputField:
    """A raw input column and what kind of value it takes."""

    name: str
    kind: Literal["categorical", "numeric", "sequence"]
    required: bool
    separator: str = "^"  # sequences: items of a JSON list are joined with it


class Scorer:
    """Scores raw records (dicts of field -> raw value) with a trained run, through the run's
    calibration when it has one.

    Args:
        run: a loaded run directory.
        unknown_fields: ``reject`` (RecordError) or ``ignore`` fields the model does not use.
        batch_size: rows per model call.

    Example:
        >>> scorer = Scorer.from_path("runs/frappe")
        >>> scorer.score_records([{"user": "187", "item": "2398", "city": "799"}])
        array([[0.0132...]])
    """

    def __init__(
        self, run: Run, unknown_fields: UnknownFields = "reject", batch_size: int = 16384
    ) -> None:
        self.run = run
        self.unknown_fields = unknown_fields
        self.batch_size = batch_size
        self.fields = _input_fields(run)
        self._by_name = {f.name: f for f in self.fields}

    @classmethod
    def from_path(cls, path: str | Path, unknown_fields: UnknownFields = "reject") -> Scorer:
        return cls(load_run(path), unknown_fields)

    @property
    def tasks(self) -> list[str]:
        """The names of the T probabilities each record gets."""
        return self.run.tasks

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Probabilities (N, T) float64 for raw records, in order."""
        columns: dict[str, list[Any]] = {f.name: [] for f in self.fields}
        for index, record in enumerate(records):
            self._check_record(index, record)
            for field in self.fields:
                columns[field.name].append(_clean(index, field, record.get(field.name)))
        frame = pl.DataFrame(
            {name: pl.Series(name, values, dtype=_dtype(self._by_name[name]), strict=False)
             for name, values in columns.items()},
            height=len(records),
        )  # fmt: skip
        return self.score_frame(frame)

    def score_frame(self, frame: pl.DataFrame) -> np.ndarray:
        """Probabilities (N, T) for a frame holding the raw input columns."""
        return self.score_features(self.run.processor.transform(frame))

    def score_features(self, features: EncodedFeatures) -> np.ndarray:
        """Probabilities (N, T) for encoded rows: the model, then the run's calibration."""
        split = EncodedSplit(features, label=None)
        return self.run.calibrate(predict_proba(self.run.model, split, self.batch_size))

    def _check_record(self, index: int, record: Mapping[str, Any]) -> None:
        if not isinstance(record, Mapping):
            raise RecordError(index, "*", f"expected an object of field: value, got {record!r}")
        for field in self.fields:
            if field.required and record.get(field.name) is None:
                raise RecordError(index, field.name, "required field is missing")
        if self.unknown_fields == "reject":
            for key in record:
                if key not in self._by_name:
                    raise RecordError(
                        index, str(key), f"unknown field; the model takes {sorted(self._by_name)}"
                    )


def _input_fields(run: Run) -> list[InputField]:
    seen: dict[str, InputField] = {}
    for feature in run.processor.features:
        kind: Literal["categorical", "numeric", "sequence"] = "categorical"
        separator = "^"
        if isinstance(feature, NumericFeature):
            kind = "numeric"
        elif isinstance(feature, SequenceFeature):
            kind, separator = "sequence", feature.separator
        field = InputField(feature.column, kind, feature.required, separator)
        seen.setdefault(feature.column, field)
    return list(seen.values())


def _dtype(field: InputField) -> pl.DataType:
    if field.kind == "sequence":
        return pl.List(pl.Utf8())
    return pl.Float64() if field.kind == "numeric" else pl.Utf8()


def _clean(index: int, field: InputField, value: Any) -> Any:
    """A JSON value as the column expects it, or RecordError."""
    if value is None:
        return None
    if field.kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise RecordError(index, field.name, f"expected a number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise RecordError(index, field.name, f"expected a number, got {value!r}") from None
        return number if math.isfinite(number) else None
    if field.kind == "sequence":
        # A JSON list keeps its items whole (an item may contain the separator); text is
        # split on the separator, as in a data file.
        if isinstance(value, list):
            return [_scalar_text(index, field, item) for item in value]
        return _scalar_text(index, field, value).split(field.separator)
    return _scalar_text(index, field, value)


def _scalar_text(index: int, field: InputField, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int | str):
        return str(value)
    raise RecordError(
        index, field.name, f"expected a string or number, got {type(value).__name__} {value!r}"
    )
