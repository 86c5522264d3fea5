"""The history builder: from the rows' own events to each row's earlier behaviour.

For every row it finds the same user's behaviour events strictly before the row's time (ties
are not before: a row never sees its own event, nor one logged at the same instant), the most
recent ``max_len`` of them, oldest first. All of it is whole-column work: Polars ranks the
user keys and times into one sortable int64 key, sorts the events by it once per split, and
NumPy's ``searchsorted`` finds each row's end and its user's first event. No loop over rows.

Splits see events of their own and earlier splits only (train < valid < test): a train row's
history never holds a valid or test event, whatever their times.

The result is compact (:class:`~finalmlp.features.history_column.HistoryColumn`): the events
once per split and two numbers per row, whatever ``max_len``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from finalmlp.columns import float_values
from finalmlp.errors import DataError, SchemaError
from finalmlp.features.history_column import HistoryColumn
from finalmlp.schema import Condition, HistoryOptions

SPLIT_ORDER = ("train", "valid", "test")
_KEY = "__history_key"


@dataclass(frozen=True)
class RowHistories:
    """The behaviour events one split may see and where each of its rows' histories sits.

    Attributes:
        events: the event columns of the history features, one row per behaviour event,
            sorted by (user, time).
        ends: (N,) int64, one past each row's most recent earlier event in ``events``.
        lengths: (N,) int32, events in each row's history (at most ``width``).
        width: ``max_len``.
    """

    events: pl.DataFrame
    ends: np.ndarray
    lengths: np.ndarray
    width: int

    def column(self, ids: np.ndarray) -> HistoryColumn:
        """The rows' histories of one event column, given its encoded ids (one per event)."""
        return HistoryColumn(ids, self.ends, self.lengths, self.width)


def build_histories(
    frames: Mapping[str, pl.DataFrame], options: HistoryOptions, columns: Sequence[str]
) -> dict[str, RowHistories]:
    """Each split's rows' histories over the event ``columns`` (the history features' ones).

    Args:
        frames: the raw splits by name (train, and valid/test when present).
        options: ``data.history``.
        columns: the event columns whose values the histories hold.

    Raises:
        SchemaError: a column the builder needs is not in a split.
        DataError: a missing user key, or a time that is missing or no finite number.
    """
    order = [s for s in SPLIT_ORDER if s in frames]
    _check_columns({s: frames[s] for s in order}, [*options.columns, *columns])
    keys, span = _row_keys(frames, order, options)
    out: dict[str, RowHistories] = {}
    visible: list[pl.DataFrame] = []
    for split in order:
        frame = frames[split].select(columns).with_columns(pl.Series(_KEY, keys[split]))
        visible.append(frame.filter(_behaviour(frames[split], options.behaviour, split)))
        events = pl.concat(visible, how="vertical_relaxed").sort(_KEY, maintain_order=True)
        out[split] = _locate(events, keys[split], options.max_len, span)
    return out


def _locate(events: pl.DataFrame, row_keys: np.ndarray, width: int, span: int) -> RowHistories:
    """Ends and lengths of the rows' histories in the sorted events."""
    event_keys = events[_KEY].to_numpy()
    # side="left": an event with the row's own (user, time) key is not before the row
    ends = np.searchsorted(event_keys, row_keys, side="left").astype(np.int64)
    firsts = np.searchsorted(event_keys, row_keys - row_keys % span, side="left")
    lengths = np.minimum(ends - firsts, width).astype(np.int32)
    return RowHistories(events.drop(_KEY), ends, lengths, width)


def events_histories(
    rows: pl.DataFrame, events: pl.DataFrame, options: HistoryOptions, columns: Sequence[str]
) -> RowHistories:
    """Histories of ``rows`` cut from a separate log of ``events`` (the recent events a served
    request sends with its records), by the rules of :func:`build_histories`.

    A row sees the behaviour events (``options.behaviour``) of its own user (``options.user``)
    strictly before its time (ties are not before), the last ``max_len`` of them, oldest
    first; events at the same time keep the order they were given in. A row whose time is
    missing (null) sees all its user's events.

    Args:
        rows: the user and time columns of the rows (time may be null).
        events: the user, time and behaviour columns and ``columns``, one row per event, in
            any order.
        options: ``data.history``.
        columns: the event columns whose values the histories hold.

    Raises:
        SchemaError: a column the builder needs is missing.
        DataError: a missing user key, or a time that is no finite number (or a missing
            event time).
    """
    _check_columns({"events": events}, [*options.columns, *columns])
    _check_columns({"rows": rows}, [options.user, options.time])
    event_times = _times(events, options.time, "events")
    row_times, not_number = float_values(rows[options.time], "numeric")
    bad = not_number | ~row_times.is_finite().fill_null(True)
    if bad.any():
        row = int(bad.arg_max() or 0)
        raise DataError(
            f"the time column {options.time!r} (data.history.time) must hold finite numbers, "
            f"got {rows[options.time][row]!r} on row {row + 1:,}"
        )
    after_all = float(event_times.max() or 0.0) + 1.0  # type: ignore[arg-type]
    users = pl.concat([_user_keys(events, options.user, "events"),
                       _user_keys(rows, options.user, "rows")])  # fmt: skip
    keys, span = _sort_keys(users, pl.concat([event_times, row_times.fill_null(after_all)]))
    frame = events.select(columns).with_columns(pl.Series(_KEY, keys[: events.height]))
    visible = frame.filter(_behaviour(events, options.behaviour, "events"))
    visible = visible.sort(_KEY, maintain_order=True)
    return _locate(visible, keys[events.height :], options.max_len, span)


def _check_columns(frames: Mapping[str, pl.DataFrame], needed: Sequence[str]) -> None:
    for split, frame in frames.items():
        missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
        if missing:
            raise SchemaError(
                f"column(s) {missing} needed by data.history not found in the {split} data; "
                f"it has {frame.columns}. Fix data.history or the features' history:"
            )


def _row_keys(
    frames: Mapping[str, pl.DataFrame], order: list[str], options: HistoryOptions
) -> tuple[dict[str, np.ndarray], int]:
    """The sort key of each row (see :func:`_sort_keys`) by split, and the span."""
    users = pl.concat([_user_keys(frames[s], options.user, s) for s in order])
    times = pl.concat([_times(frames[s], options.time, s) for s in order])
    keys, span = _sort_keys(users, times)
    out, start = {}, 0
    for split in order:
        stop = start + frames[split].height
        out[split] = keys[start:stop]
        start = stop
    return out, span


def _sort_keys(users: pl.Series, times: pl.Series) -> tuple[np.ndarray, int]:
    """``user_rank * span + time_rank`` per row (int64; sorts as (user, time)), and the span
    (one more than the largest time rank)."""
    user_rank = users.rank("dense").cast(pl.Int64).to_numpy()
    time_rank = times.rank("dense").cast(pl.Int64).to_numpy()
    span = int(time_rank.max(initial=0)) + 1
    if int(user_rank.max(initial=0)) + 1 >= 2**62 // span:
        raise DataError("too many distinct users and times for the history key (2^62)")
    return user_rank * span + time_rank, span


def _user_keys(frame: pl.DataFrame, column: str, split: str) -> pl.Series:
    from finalmlp.features.tokens import normalize_tokens

    keys = normalize_tokens(frame[column], column)
    if keys.null_count():
        row = int(keys.is_null().arg_max() or 0)
        raise DataError(
            f"the user key {column!r} (data.history.user) is missing on row {row + 1:,} of the "
            f"{split} data ({keys.null_count():,} rows in all); every row needs one to find its "
            "history: fill it, or drop those rows"
        )
    return keys


def _times(frame: pl.DataFrame, column: str, split: str) -> pl.Series:
    raw = frame[column]
    values, not_number = float_values(raw, "numeric")
    bad = not_number | values.is_null() | ~values.is_finite().fill_null(False)
    if bad.any():
        row = int(bad.arg_max() or 0)
        raise DataError(
            f"the time column {column!r} (data.history.time) must hold finite numbers (e.g. "
            f"unix seconds), got {raw[row]!r} on row {row + 1:,} of the {split} data; convert "
            "dates to numbers first"
        )
    return values


def _behaviour(frame: pl.DataFrame, condition: Condition | None, split: str) -> pl.Series:
    """Which rows of a split are behaviour events."""
    if condition is None:
        return pl.Series([True] * frame.height, dtype=pl.Boolean)
    if condition.column not in frame.columns:
        raise SchemaError(
            f"the behaviour column {condition.column!r} (data.history.behaviour) is not in the "
            f"{split} data; it has {frame.columns}"
        )
    raw = frame[condition.column]
    if isinstance(condition.value, str):
        if condition.op not in ("==", "!="):
            raise DataError(
                f"data.history.behaviour compares text {condition.value!r} with {condition.op}; "
                "text allows == and != only (give a number to compare numbers)"
            )
        text = raw.cast(pl.Utf8).str.strip_chars()
        hit = text == condition.value.strip()
        return (hit if condition.op == "==" else ~hit).fill_null(False)
    values, not_number = float_values(raw, "numeric")
    if not_number.any():
        row = int(not_number.arg_max() or 0)
        raise DataError(
            f"the behaviour column {condition.column!r} must be numeric to compare with "
            f"{condition.value}, got {raw[row]!r} on row {row + 1:,} of the {split} data"
        )
    ops = {
        ">=": values >= condition.value, ">": values > condition.value,
        "<=": values <= condition.value, "<": values < condition.value,
        "==": values == condition.value, "!=": values != condition.value,
    }  # fmt: skip
    return ops[condition.op].fill_null(False)
