"""A/B tests: arms with traffic weights, sticky assignment, an append-only outcome log, a report.

Pure logic, no HTTP. An arm is a named bundle directory with a weight::

    parse_arm("control=runs/lr:0.9")  ->  Arm("control", Path("runs/lr"), 0.9)

A request goes to the arm whose cumulative-weight interval holds ``u = blake2b(key) / 2**64``:
the same key (a user id) always lands on the same arm, in every process and after restarts, and
over many keys the split follows the weights. Requests without a key draw ``u`` at random.

The log is JSON lines, one per scored request (its predictions) and one per feedback (its 0/1
outcomes), flushed and fsynced as written; :class:`ABLog` replays it on start, so counts survive
a restart. A crash mid-write leaves at most a truncated last line, which is dropped on start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from finalmlp.errors import ConfigError, DataError, FinalMLPError
from finalmlp.metrics import roc_auc

logger = logging.getLogger(__name__)
MAX_PENDING = 1_000_000  # impressions kept waiting for feedback (oldest requests dropped first)


class FeedbackError(FinalMLPError, ValueError):
    """Feedback that cannot be recorded (the HTTP service answers 422)."""


class UnknownRequestError(FeedbackError):
    """Feedback for a request id that was never scored, or whose wait expired (HTTP 404)."""


@dataclass(frozen=True)
class Arm:
    """One side of an A/B test: a name, a bundle directory and a traffic weight (> 0)."""

    name: str
    path: Path
    weight: float = 1.0


def parse_arm(spec: str) -> Arm:
    """``NAME=DIR:WEIGHT`` (``:WEIGHT`` optional, default 1) -> Arm.

    Raises:
        ConfigError: no ``=``, an empty name or directory, or a weight that is not a positive
            finite number.
    """
    name, sep, rest = spec.partition("=")
    name = name.strip()
    if not sep or not name or not rest:
        raise ConfigError(f"arm {spec!r} must look like NAME=DIR:WEIGHT, e.g. control=runs/lr:0.9")
    path_text, weight = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    if colon and head and not tail.startswith(("/", "\\")):  # keep C:\dir intact
        path_text = head
        try:
            weight = float(tail)
        except ValueError:
            raise ConfigError(
                f"arm {spec!r}: weight must be a number, got {tail!r} (NAME=DIR:WEIGHT)"
            ) from None
    if not (math.isfinite(weight) and weight > 0):
        raise ConfigError(f"arm {spec!r}: weight must be a positive number, got {weight!r}")
    return Arm(name, Path(path_text), weight)


def normalize_arms(arms: Sequence[Arm]) -> list[Arm]:
    """The arms with weights summing to 1.

    Raises:
        ConfigError: no arms, a repeated name, or a weight that is not positive.
    """
    if not arms:
        raise ConfigError("at least one arm is needed")
    names = [a.name for a in arms]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"arm names must be unique, got {repeated} more than once")
    for arm in arms:
        if not (math.isfinite(arm.weight) and arm.weight > 0):
            raise ConfigError(f"arm {arm.name!r}: weight must be positive, got {arm.weight!r}")
    total = sum(a.weight for a in arms)
    return [replace(a, weight=a.weight / total) for a in arms]


def key_position(key: str) -> float:
    """A stable position in [0, 1) for a key: the same in every process (not ``hash()``)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def choose_arm(arms: Sequence[Arm], key: str | None, rng: random.Random | None = None) -> Arm:
    """The arm for a request: sticky by ``key``, or drawn from ``rng`` when there is no key.

    Example:
        >>> arms = [Arm("control", Path("a"), 0.9), Arm("new", Path("b"), 0.1)]
        >>> choose_arm(arms, "user-42") == choose_arm(arms, "user-42")
        True
    """
    if not arms:
        raise ConfigError("at least one arm is needed")
    position = key_position(key) if key is not None else (rng or random).random()
    target = position * sum(a.weight for a in arms)
    cumulative = 0.0
    for arm in arms:
        cumulative += arm.weight
        if target < cumulative:
            return arm
    return arms[-1]  # rounding at the top end


# ----------------------------------------------------------------------------- log
@dataclass
class _ArmCounts:
    requests: int = 0
    impressions: int = 0
    predictions: array[float] = field(default_factory=lambda: array("d"))  # with feedback
    outcomes: array[int] = field(default_factory=lambda: array("b"))


class ABLog:
    """Impressions and outcomes per arm, in memory and in an append-only JSONL file.

    Args:
        path: the log file (created if missing, replayed if present); None keeps memory only.
        max_pending: impressions remembered for feedback; the oldest requests expire first
            (memory: about 8 bytes each, and 9 per impression with feedback).

    Raises:
        DataError: a line before the last one is not a valid log record.
    """

    def __init__(self, path: str | Path | None = None, max_pending: int = MAX_PENDING) -> None:
        self.path = Path(path) if path is not None else None
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._arms: dict[str, _ArmCounts] = {}
        self._pending: OrderedDict[str, tuple[str, array[float]]] = OrderedDict()
        self._pending_impressions = 0
        self._file: TextIO | None = None
        if self.path is not None:
            self._replay(self.path)
            self._file = self.path.open("a", encoding="utf-8")

    @property
    def persistent(self) -> bool:
        """Whether records go to a file (each write is fsynced: call it off the event loop)."""
        return self.path is not None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def log_impressions(self, request_id: str, arm: str, predictions: Sequence[float]) -> None:
        """Record that ``arm`` served ``predictions`` (one per impression) for a request."""
        values = [float(p) for p in predictions]
        record = {"type": "impressions", "request_id": request_id, "arm": arm}
        with self._lock:
            self._write({**record, "predictions": values, "time": time.time()})
            self._apply_impressions(request_id, arm, values)

    def log_feedback(self, request_id: str, outcomes: Sequence[int]) -> str:
        """Record the 0/1 outcomes of a scored request, in its record order; returns its arm.

        Raises:
            UnknownRequestError: the request id is unknown, already answered, or expired.
            FeedbackError: outcomes are not 0/1, or their count differs from the predictions'.
        """
        values = list(outcomes)
        if not all(_is_outcome(v) for v in values):
            raise FeedbackError(f"outcomes must be 0 or 1, got {values!r}")
        with self._lock:
            arm, predictions = self._pending_request(request_id)
            if len(values) != len(predictions):
                raise FeedbackError(
                    f"request {request_id!r} scored {len(predictions)} records but "
                    f"{len(values)} outcomes came; send one outcome per record, in order"
                )
            record = {"type": "feedback", "request_id": request_id, "outcomes": values}
            self._write({**record, "time": time.time()})
            self._apply_feedback(request_id, values)
            return arm

    def report(self, arm_order: Sequence[str] = ()) -> dict[str, Any]:
        """Per arm: requests, impressions, feedback, clicks, ctr, mean predicted CTR, AUC, and
        for each arm after the first a two-proportion z-test of its CTR against the first's.

        CTR, mean predicted CTR and AUC are over impressions with feedback; undefined values
        (no feedback, a single class) are None.
        """
        with self._lock:
            names = list(dict.fromkeys([*arm_order, *self._arms]))
            arms = {n: _arm_summary(self._arms.get(n, _ArmCounts())) for n in names}
        for name in names[1:]:
            control, arm = arms[names[0]], arms[name]
            z, p = two_proportion_test(
                control["clicks"], control["feedback"], arm["clicks"], arm["feedback"]
            )
            arm["vs_control"] = {"control": names[0], "z": z, "p_value": p}
        return {"arms": arms}

    # ------------------------------------------------------------------ internals
    def _pending_request(self, request_id: str) -> tuple[str, array[float]]:
        entry = self._pending.get(request_id)
        if entry is None:
            raise UnknownRequestError(
                f"unknown request id {request_id!r}: not scored by this service, its feedback "
                f"was already recorded, or it is older than the last {self.max_pending:,} "
                "scored impressions"
            )
        return entry

    def _apply_impressions(self, request_id: str, arm: str, predictions: list[float]) -> None:
        counts = self._arms.setdefault(arm, _ArmCounts())
        counts.requests += 1
        counts.impressions += len(predictions)
        self._pending[request_id] = (arm, array("d", predictions))
        self._pending_impressions += len(predictions)
        while self._pending_impressions > self.max_pending and len(self._pending) > 1:
            _, (_, dropped) = self._pending.popitem(last=False)
            self._pending_impressions -= len(dropped)

    def _apply_feedback(self, request_id: str, outcomes: list[int]) -> None:
        arm, predictions = self._pending.pop(request_id)
        self._pending_impressions -= len(predictions)
        counts = self._arms.setdefault(arm, _ArmCounts())
        counts.predictions.extend(predictions)
        counts.outcomes.extend(outcomes)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def _replay(self, path: Path) -> None:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            return
        data = path.read_bytes()
        lines = data.split(b"\n")
        good_end = offset = 0
        for number, line in enumerate(lines, start=1):
            is_last = number == len(lines)
            if line.strip():
                record = _parse_line(line)
                if record is None and is_last:  # a write cut short by a crash: drop it
                    logger.warning("%s: dropping a truncated last line", path)
                    break
                if record is None or not self._apply_record(record):
                    raise DataError(
                        f"{path}, line {number}: not a valid A/B log record; the log is "
                        "damaged (remove the line, or start a new log file)"
                    )
            offset += len(line) + 1
            good_end = min(offset, len(data))
        if good_end < len(data) or not data.endswith(b"\n"):
            with path.open("r+b") as file:  # cut a torn tail, so appends start a fresh line
                file.truncate(good_end)
                if good_end and data[good_end - 1 : good_end] != b"\n":
                    file.seek(good_end)
                    file.write(b"\n")

    def _apply_record(self, record: dict[str, Any]) -> bool:
        """Replay one parsed line; False when it is inconsistent with what came before."""
        request_id = record["request_id"]
        if record["type"] == "impressions":
            self._apply_impressions(request_id, record["arm"], record["predictions"])
            return True
        entry = self._pending.get(request_id)
        if entry is None:  # feedback for a request that expired from memory
            return True
        if len(entry[1]) != len(record["outcomes"]):
            return False
        self._apply_feedback(request_id, record["outcomes"])
        return True


def _parse_line(line: bytes) -> dict[str, Any] | None:
    """A log record, or None for a line that is not one (torn, edited, another file)."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("request_id"), str):
        return None
    kind = record.get("type")
    if kind == "impressions" and isinstance(record.get("arm"), str):
        values, valid = record.get("predictions"), _is_number
    elif kind == "feedback":
        values, valid = record.get("outcomes"), _is_outcome
    else:
        return None
    return record if isinstance(values, list) and all(valid(v) for v in values) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_outcome(value: Any) -> bool:
    return _is_number(value) and value in (0, 1)


def _arm_summary(counts: _ArmCounts) -> dict[str, Any]:
    labelled = len(counts.outcomes)
    outcomes = np.frombuffer(counts.outcomes, dtype=np.int8).copy()  # no view: arrays grow
    predictions = np.frombuffer(counts.predictions, dtype=np.float64).copy()
    clicks = int(outcomes.sum(dtype=np.int64))
    auc = roc_auc(outcomes, predictions) if labelled else None
    return {
        "requests": counts.requests,
        "impressions": counts.impressions,
        "feedback": labelled,
        "clicks": clicks,
        "ctr": clicks / labelled if labelled else None,
        "mean_predicted_ctr": float(predictions.mean()) if labelled else None,
        "auc": auc if auc is not None and math.isfinite(auc) else None,
    }


def two_proportion_test(
    clicks_a: int, n_a: int, clicks_b: int, n_b: int
) -> tuple[float | None, float | None]:
    """Pooled two-proportion z-test of CTR_b - CTR_a: ``(z, two-sided p)``, None when undefined.

    ``z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b))`` with the pooled ``p``, and
    ``p-value = erfc(|z| / sqrt(2))``.
    """
    if n_a == 0 or n_b == 0:
        return None, None
    pooled = (clicks_a + clicks_b) / (n_a + n_b)
    variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if variance <= 0.0:
        return None, None
    z = (clicks_b / n_b - clicks_a / n_a) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2.0))
