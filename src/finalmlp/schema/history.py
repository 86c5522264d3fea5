"""Config of per-row behaviour histories built from an event log (``data.history``).

Part of the config schema (``finalmlp.schema`` re-exports every class here). The builder is
:mod:`finalmlp.features.history`; a ``sequence`` feature with ``history: <column>`` reads its
items from that column of the user's earlier behaviour events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from finalmlp.schema.base import StrictModel

ConditionOp = Literal[">=", ">", "<=", "<", "==", "!="]


class Condition(StrictModel):
    """``<column> <op> <value>``, e.g. ``{column: rating, op: ">=", value: 4}``.

    A number compares the column as numbers (text that is no number is an error); text
    compares the stripped text (``==`` and ``!=`` only).
    """

    column: str = Field(min_length=1)
    op: ConditionOp = "=="
    value: float | str


class HistoryOptions(StrictModel):
    """Which rows are a user's behaviour events, and how a row's history is cut from them.

    The rows of train, valid and test are the event log: a row's history is the behaviour
    events of the same ``user`` with a ``time`` strictly before the row's (ties are not
    before), most recent last, the last ``max_len`` of them. A train row sees train events
    only; a valid row train and valid events; a test row all three (so no split ever sees a
    later split's events). Rows need not be in time order: the builder sorts them.

    Attributes:
        user: the user key column (every row needs one).
        time: a numeric time column (e.g. unix seconds).
        max_len: the most recent events a history keeps.
        behaviour: which rows count as behaviour (default: all), e.g. ``rating >= 4``.
    """

    user: str = Field(min_length=1)
    time: str = Field(min_length=1)
    max_len: int = Field(50, ge=1)
    behaviour: Condition | None = None

    @property
    def columns(self) -> list[str]:
        """The columns the builder reads besides the history features' own."""
        extra = [self.behaviour.column] if self.behaviour is not None else []
        return list(dict.fromkeys([self.user, self.time, *extra]))


class Join(StrictModel):
    """Columns of a lookup table (e.g. ``movies.csv``: movieId -> genres) joined onto the
    rows of every split by a key column, before features and histories are built. A key
    without a match leaves the columns missing. A relative ``path`` is relative to the folder
    of ``data.train``.
    """

    path: Path
    on: str = Field(min_length=1)
    columns: list[str] = Field(min_length=1)
