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
from finalmlp.features.processor import EncodedFeatures
from finalmlp.inference import predict_proba
from finalmlp.schema import NumericFeature, SequenceFeature
from finalmlp.serve.events import EVENTS_FIELD, EventHistories, RecordEvents
from finalmlp.serve.records import ECHO_CHARS, RecordError, clip_text, scalar_text, show

__all__ = ["ECHO_CHARS", "InputField", "Prepared", "RecordError", "Scorer", "clip_text", "show"]

UnknownFields = Literal["reject", "ignore"]


@dataclass
class Prepared:
    """Validated records as columns (field name -> cleaned values), ready to encode and score.

    Several requests' Prepared join into one model call (micro-batching) with :meth:`concat`.
    """

    columns: dict[str, list[Any]]
    num_rows: int

    @staticmethod
    def concat(parts: Sequence[Prepared]) -> Prepared:
        if len(parts) == 1:
            return parts[0]
        columns: dict[str, list[Any]] = {name: [] for name in parts[0].columns}
        for part in parts:
            for name, values in part.columns.items():
                columns[name].extend(values)
        return Prepared(columns, sum(part.num_rows for part in parts))


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
        # a run with data.history also takes each record's recent events (serve/events.py)
        self.events = EventHistories.of_run(run, reject_unknown=unknown_fields == "reject")
        extra = self.events.record_fields if self.events is not None else set()
        self._accepted = set(self._by_name) | extra

    @classmethod
    def from_path(cls, path: str | Path, unknown_fields: UnknownFields = "reject") -> Scorer:
        return cls(load_run(path), unknown_fields)

    @property
    def tasks(self) -> list[str]:
        """The names of the T probabilities each record gets."""
        return self.run.tasks

    def score_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Probabilities (N, T) float64 for raw records, in order.

        Raises:
            RecordError: a record that cannot be scored, or whose score is not finite.
        """
        prepared = self.prepare(records)
        scores = self.score_prepared(prepared)
        self.check_finite(prepared, scores)
        return scores

    def records_frame(self, records: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        """The input columns of raw records, checked and cleaned (RecordError otherwise)."""
        return self.prepared_frame(self.prepare(records))

    def prepare(self, records: Sequence[Mapping[str, Any]]) -> Prepared:
        """Validate and clean raw records (RecordError naming the record and field)."""
        columns: dict[str, list[Any]] = {f.name: [] for f in self.fields}
        with_events: list[RecordEvents] = []
        for index, record in enumerate(records):
            self._check_record(index, record)
            if self.events is not None and record.get(EVENTS_FIELD) is not None:
                with_events.append(self.events.parse(index, record))
            for field in self.fields:
                columns[field.name].append(_clean(index, field, record.get(field.name)))
        if self.events is not None:
            self.events.fill(columns, with_events)
        return Prepared(columns, len(records))

    def score_prepared(self, prepared: Prepared) -> np.ndarray:
        """Probabilities (N, T) for prepared records (not checked to be finite)."""
        return self.score_frame(self.prepared_frame(prepared))

    def prepared_frame(self, prepared: Prepared) -> pl.DataFrame:
        """Prepared records as a frame of the input columns."""
        frame = pl.DataFrame(
            {name: pl.Series(name, values, dtype=_dtype(self._by_name[name]), strict=False)
             for name, values in prepared.columns.items()},
            height=prepared.num_rows,
        )  # fmt: skip
        return frame

    def check_finite(self, prepared: Prepared, scores: np.ndarray) -> None:
        """RecordError for the first record whose score (any task) is NaN or infinite,
        naming the numeric field most outside the range the model was trained on."""
        finite = np.isfinite(scores).all(axis=1)
        if finite.all():
            return
        index = int(np.flatnonzero(~finite)[0])
        stats = self.run.processor.numeric_stats_
        worst, worst_field, worst_value = -1.0, "*", None
        for field in self.fields:
            value = prepared.columns[field.name][index] if field.kind == "numeric" else None
            if value is None:
                continue
            names = [f.name for f in self.run.processor.features if f.column == field.name]
            feat = next((stats[n] for n in names if n in stats), {})
            spread = abs(value - feat.get("mean", 0.0)) / (feat.get("std") or 1.0)
            if spread > worst:
                worst, worst_field, worst_value = spread, field.name, (value, feat)
        if worst_value is None:
            raise RecordError(index, "*", "the model gave a score that is not a finite number")
        value, feat = worst_value
        seen = (
            f"; training saw values from {feat['min']:g} to {feat['max']:g}"
            if "min" in feat and "max" in feat
            else ""
        )
        raise RecordError(
            index,
            worst_field,
            f"value {value:g} is too large for the model: its score is not a finite number"
            f"{seen}; send a value in that range",
        )

    def score_frame(self, frame: pl.DataFrame) -> np.ndarray:
        """Probabilities (N, T) for a frame holding the raw input columns."""
        return self.score_features(self.run.processor.transform(frame))

    def score_features(self, features: EncodedFeatures) -> np.ndarray:
        """Probabilities (N, T) for encoded rows: the model, then the run's calibration."""
        split = EncodedSplit(features, label=None)
        raw = predict_proba(self.run.model, split, self.batch_size)
        finite = np.isfinite(raw).all(axis=1)
        if finite.all():
            return self.run.calibrate(raw)
        # rows the model cannot score stay NaN (check_finite names their field); the
        # calibrator sees only finite probabilities
        scores = np.full(raw.shape, np.nan)
        if finite.any():
            scores[finite] = self.run.calibrate(raw[finite])
        return scores

    def _check_record(self, index: int, record: Mapping[str, Any]) -> None:
        if not isinstance(record, Mapping):
            raise RecordError(index, "*", f"expected an object of field: value, got {show(record)}")
        for field in self.fields:
            if field.required and record.get(field.name) is None:
                raise RecordError(index, field.name, "required field is missing")
        if self.unknown_fields == "reject":
            for key in record:
                if key == EVENTS_FIELD and self.events is None:
                    raise RecordError(
                        index, key, "this model builds no history from events (it was "
                        "trained without data.history); send its fields only"
                    )  # fmt: skip
                if key not in self._accepted:
                    raise RecordError(
                        index, str(key), f"unknown field; the model takes {sorted(self._accepted)}"
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
            raise RecordError(index, field.name, f"expected a number, got {show(value)}")
        try:
            number = float(value)
        except ValueError:
            raise RecordError(index, field.name, f"expected a number, got {show(value)}") from None
        except OverflowError:  # an integer of hundreds of digits
            raise RecordError(
                index,
                field.name,
                f"number of {len(str(value)):,} digits is too large (over 1.8e308); send a "
                "finite floating-point number",
            ) from None
        return number if math.isfinite(number) else None
    if field.kind == "sequence":
        # A JSON list keeps its items whole (an item may contain the separator); text is
        # split on the separator, as in a data file.
        if isinstance(value, list):
            return [scalar_text(index, field.name, item) for item in value]
        return scalar_text(index, field.name, value).split(field.separator)
    return scalar_text(index, field.name, value)
