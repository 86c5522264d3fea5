"""Served records' errors and the cleaning of their values, shared by the scorer and the
event histories (:mod:`finalmlp.serve.events`)."""

from __future__ import annotations

import math
import reprlib
from typing import Any

from finalmlp.errors import FinalMLPError

ECHO_CHARS = 100  # an input value or name quoted in an error message: at most this many chars


def clip_text(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with a note of its length when it was longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxlong = 3, 8, 8, 40
_REPR.maxstring = _REPR.maxother = ECHO_CHARS


def show(value: Any) -> str:
    """An input value for an error message: its repr, clipped (never the whole of a huge one)."""
    if isinstance(value, str):
        if len(value) <= ECHO_CHARS:
            return repr(value)
        return f"{value[:ECHO_CHARS]!r}... ({len(value):,} characters)"
    return clip_text(_REPR.repr(value))


class RecordError(FinalMLPError, ValueError):
    """A record that cannot be scored: which record, which field, what was wrong."""

    def __init__(self, index: int, field: str, message: str) -> None:
        field = clip_text(field)
        super().__init__(f"record {index}, field {field!r}: {message}")
        self.index = index
        self.field = field
        self.detail = message


def scalar_text(index: int, field: str, value: Any) -> str:
    """A JSON scalar as categorical text (RecordError for a list or object)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int | str):
        return str(value)
    raise RecordError(
        index,
        field,
        f"expected a string or number, got {type(value).__name__} {show(value)}",
    )
