"""Histories built by the service from a recent-events list sent with a record.

A run trained with ``data.history`` builds its history features from an event log. A served
record may send the history features itself (JSON lists), or instead the user's recent events
under ``"events"``; the service then cuts each history from them by the training builder's own
rules (:func:`finalmlp.features.history.events_histories`)::

    {"user": "u7", "item": "i31", "category": "k3", "time": 1700000500,
     "events": [{"item": "i12", "category": "k1", "time": 1700000000, "label": 1},
                {"item": "i31", "category": "k3", "time": 1699990000, "label": 0}]}

Each event is an object with

- the time column (``data.history.time``): a finite number, required;
- a value for every history column (the ``history:`` column of each history feature, e.g.
  the item and its side fields): required, non-empty;
- the behaviour column (``data.history.behaviour.column``), when the config filters
  behaviour: an event without it is not behaviour;
- the user key (``data.history.user``), optional: when given, the record's own.

The record's own time (the time column, optional) cuts the history: events strictly before it
(ties are not before); without it, all the events count. Events may come in any order: they
are sorted by time, the most recent last, and the last ``max_len`` kept. A record that sends
events sends none of the history features themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from finalmlp.bundle import Run
from finalmlp.features.history import events_histories
from finalmlp.schema import HistoryOptions, SequenceFeature
from finalmlp.serve.records import RecordError, scalar_text, show

EVENTS_FIELD = "events"


@dataclass(frozen=True)
class RecordEvents:
    """One record's parsed events: its index, own time (None: after all events), and per
    event the values of the event columns (history columns as text, the time a float)."""

    index: int
    time: float | None
    events: list[dict[str, Any]]


class EventHistories:
    """Parses the ``events`` of served records and fills their history features.

    Args:
        options: the run's ``data.history``.
        features: the run's history features (``SequenceFeature`` with ``history:``).
        reject_unknown: an event key the history does not use is an error (else ignored).
    """

    def __init__(
        self, options: HistoryOptions, features: Sequence[SequenceFeature], reject_unknown: bool
    ) -> None:
        self.options = options
        self.features = list(features)
        self.columns = list(dict.fromkeys(f.history for f in features if f.history))
        behaviour = options.behaviour
        self.behaviour = behaviour.column if behaviour is not None else None
        self.numeric_behaviour = behaviour is not None and not isinstance(behaviour.value, str)
        self.keys = set([options.user, options.time, *self.columns, *options.columns])
        self.reject_unknown = reject_unknown

    @classmethod
    def of_run(cls, run: Run, reject_unknown: bool) -> EventHistories | None:
        """The run's event histories; None when it was trained without ``data.history``."""
        options = run.config.data.history
        features = [
            f for f in run.processor.features if isinstance(f, SequenceFeature) and f.history
        ]
        if options is None or not features:
            return None
        return cls(options, features, reject_unknown)

    @property
    def record_fields(self) -> set[str]:
        """Fields a record may send besides the model's inputs: the events, its time, its user."""
        return {EVENTS_FIELD, self.options.time, self.options.user}

    def parse(self, index: int, record: Mapping[str, Any]) -> RecordEvents:
        """The record's events, checked (RecordError naming the record and field)."""
        sent = [f.column for f in self.features if record.get(f.column) is not None]
        if sent:
            raise RecordError(
                index, EVENTS_FIELD, f"the record sends events and the history {sent} too; "
                "send one of them (the service builds the history from the events)"
            )  # fmt: skip
        events = record[EVENTS_FIELD]
        if not isinstance(events, list):
            raise RecordError(
                index, EVENTS_FIELD, f"expected a list of event objects, got {show(events)}"
            )
        time = record.get(self.options.time)
        own = None if time is None else _number(index, self.options.time, time)
        user = record.get(self.options.user)
        parsed = [self._event(index, i, event, user) for i, event in enumerate(events)]
        return RecordEvents(index, own, parsed)

    def _event(self, index: int, position: int, event: Any, user: Any) -> dict[str, Any]:
        where = f"{EVENTS_FIELD}[{position}]"
        if not isinstance(event, Mapping):
            raise RecordError(index, where, f"expected an event object, got {show(event)}")
        if self.reject_unknown:
            for key in event:
                if key not in self.keys:
                    raise RecordError(
                        index, f"{where}.{key}", f"unknown event field; events take "
                        f"{sorted(self.keys)}"
                    )  # fmt: skip
        options = self.options
        if event.get(options.time) is None:
            raise RecordError(
                index, f"{where}.{options.time}", "missing: each event needs its time, a number"
            )
        out: dict[str, Any] = {options.time: _number(index, f"{where}.{options.time}",
                                                     event[options.time])}  # fmt: skip
        for column in self.columns:
            text = _text(index, f"{where}.{column}", event.get(column))
            if text is None:
                raise RecordError(
                    index, f"{where}.{column}", f"missing: each event needs a value of every "
                    f"history column {self.columns}"
                )  # fmt: skip
            out[column] = text
        if self.behaviour is not None and self.behaviour not in out:
            value = event.get(self.behaviour)
            field = f"{where}.{self.behaviour}"
            number = self.numeric_behaviour and value is not None
            out[self.behaviour] = (
                _number(index, field, value) if number else _text(index, field, value)
            )
        if event.get(options.user) is not None and user is not None:
            _same_user(index, f"{where}.{options.user}", event[options.user], user)
        return out

    def fill(self, columns: dict[str, list[Any]], records: Sequence[RecordEvents]) -> None:
        """Set each record's history features (``columns``) to the items its events give."""
        if not records:
            return
        options = self.options
        rows = pl.DataFrame(
            {options.user: [str(k) for k in range(len(records))],
             options.time: pl.Series([r.time for r in records], dtype=pl.Float64)}
        )  # fmt: skip
        owners = [str(k) for k, r in enumerate(records) for _ in r.events]
        flat = [event for r in records for event in r.events]
        data: dict[str, pl.Series] = {options.user: pl.Series(owners, dtype=pl.Utf8)}
        for column in dict.fromkeys([options.time, *self.columns, *options.columns]):
            if column == options.user:
                continue
            values = [event.get(column) for event in flat]
            number = column == options.time or (column == self.behaviour and self.numeric_behaviour)
            data[column] = pl.Series(column, values, dtype=pl.Float64 if number else pl.Utf8)
        histories = events_histories(rows, pl.DataFrame(data), options, self.columns)
        ends, lengths = histories.ends.tolist(), histories.lengths.tolist()
        for feature in self.features:
            assert feature.history is not None
            items = histories.events[feature.history].to_list()
            for k, record in enumerate(records):
                columns[feature.column][record.index] = items[ends[k] - lengths[k] : ends[k]]


def _same_user(index: int, field: str, theirs: Any, mine: Any) -> None:
    """RecordError unless an event's user key is the record's (compared as tokens)."""
    their_text, my_text = (_text(index, field, v) for v in (theirs, mine))
    if (their_text or "").strip() != (my_text or "").strip():
        raise RecordError(
            index, field, f"the event belongs to user {their_text!r}, the record to {my_text!r}; "
            "send each record its own user's events"
        )  # fmt: skip


def _number(index: int, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RecordError(index, field, f"expected a number, got {show(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise RecordError(index, field, f"expected a number, got {show(value)}") from None
    if not math.isfinite(number):
        raise RecordError(index, field, f"expected a finite number, got {show(value)}")
    return number


def _text(index: int, field: str, value: Any) -> str | None:
    """The value as the scorer cleans a categorical value; None when missing or blank."""
    if value is None:
        return None
    text = scalar_text(index, field, value)
    return text if text.strip() else None
