"""A/B tests: arms with traffic weights, sticky assignment, an append-only outcome log, a report.

Pure logic, no HTTP. An arm is a named bundle directory with a weight::

    parse_arm("control=runs/lr:0.9")  ->  Arm("control", Path("runs/lr"), 0.9)

A request goes to the arm whose cumulative-weight interval holds ``u = blake2b(key) / 2**64``:
the same key (a user id) always lands on the same arm, in every process and after restarts, and
over many keys the split follows the weights. Requests without a key draw ``u`` at random.

The log is JSON lines, one per scored request (its predictions; per task for a model of several
tasks) and one per feedback (its 0/1 outcomes), flushed and fsynced as written; :class:`ABLog`
replays it on start, so counts survive a restart. A crash mid-write leaves at most a truncated
last line, which is dropped on start.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from finalmlp.errors import ConfigError, DataError
from finalmlp.serve.ab_counts import (
    ArmCounts,
    FeedbackError,
    UnknownRequestError,
    add_vs_control,
    arm_summary,
    check_outcomes,
    from_json,
    json_number,
    parse_line,
    two_proportion_test,
)

__all__ = [
    "ABLog",
    "Arm",
    "FeedbackError",
    "UnknownRequestError",
    "choose_arm",
    "key_position",
    "normalize_arms",
    "parse_arm",
    "two_proportion_test",
]

logger = logging.getLogger(__name__)
MAX_PENDING = 1_000_000  # impressions kept waiting for feedback (oldest requests dropped first)


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
Outcomes = Sequence[int | Mapping[str, int | None]]


class ABLog:
    """Impressions and outcomes per arm (and task), in memory and in an append-only JSONL file.

    A one-task model's predictions and outcomes are numbers (one per record); a model of
    several tasks logs one ``{task: probability}`` per record and takes one ``{task: 0, 1 or
    null}`` per record as outcomes (null or absent: not observed for that task).

    Args:
        path: the log file (created if missing, replayed if present); None keeps memory only.
        max_pending: impressions remembered for feedback; the oldest requests expire first
            (memory: about 8 bytes per task each, and 9 per impression and task with feedback).

    Raises:
        DataError: a line before the last one is not a valid log record.
    """

    def __init__(self, path: str | Path | None = None, max_pending: int = MAX_PENDING) -> None:
        self.path = Path(path) if path is not None else None
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._arms: dict[str, ArmCounts] = {}
        # request id -> (arm, tasks or None, predictions: records x tasks, flattened)
        self._pending: OrderedDict[str, tuple[str, tuple[str, ...] | None, array[float]]] = (
            OrderedDict()
        )
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

    def log_impressions(
        self,
        request_id: str,
        arm: str,
        predictions: Sequence[float] | Sequence[Sequence[float]],
        tasks: Sequence[str] | None = None,
    ) -> None:
        """Record that ``arm`` served ``predictions`` for a request: one number per impression,
        or with ``tasks`` one row of len(tasks) numbers per impression. A number that is not
        finite is logged as null (never NaN, which is not JSON) and left out of the report."""
        record: dict[str, Any] = {"type": "impressions", "request_id": request_id, "arm": arm}
        if tasks is None:
            values = [float(p) for p in predictions]  # type: ignore[arg-type]
            record["predictions"] = [json_number(v) for v in values]
        else:
            names = tuple(tasks)
            rows = [[float(v) for v in row] for row in predictions]  # type: ignore[union-attr]
            if any(len(row) != len(names) for row in rows):
                raise ValueError(f"each impression needs one prediction per task {list(names)}")
            values = [v for row in rows for v in row]
            record["tasks"] = list(names)
            record["predictions"] = [
                {n: json_number(v) for n, v in zip(names, row, strict=True)} for row in rows
            ]
        with self._lock:
            self._write({**record, "time": time.time()})
            self._apply_impressions(request_id, arm, values, None if tasks is None else names)

    def log_feedback(self, request_id: str, outcomes: Outcomes) -> str:
        """Record the outcomes of a scored request, in its record order; returns its arm.

        Raises:
            UnknownRequestError: the request id is unknown, already answered, or expired.
            FeedbackError: outcomes that are not 0/1 (or, for several tasks, objects of the
                request's tasks with 0, 1 or null), or their count differs from the records'.
        """
        values = list(outcomes)
        with self._lock:
            arm, tasks, predictions = self._pending_request(request_id)
            normalized = check_outcomes(request_id, values, tasks)
            records = len(predictions) // (len(tasks) if tasks else 1)
            if len(values) != records:
                raise FeedbackError(
                    f"request {request_id!r} scored {records} records but "
                    f"{len(values)} outcomes came; send one outcome per record, in order"
                )
            record = {"type": "feedback", "request_id": request_id, "outcomes": normalized}
            self._write({**record, "time": time.time()})
            self._apply_feedback(request_id, normalized)
            return arm

    def report(
        self, arm_order: Sequence[str] = (), arm_tasks: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, Any]:
        """Per arm: requests, impressions, feedback, clicks, ctr, mean predicted CTR, AUC, and
        for each arm after the first a two-proportion z-test of its CTR against the first's;
        for an arm of several tasks (in ``arm_tasks``, or logged so) these per task, under
        ``tasks``.

        CTR, mean predicted CTR and AUC are over impressions with feedback; undefined values
        (no feedback, a single class) are None.
        """
        arm_tasks = arm_tasks or {}
        with self._lock:
            names = list(dict.fromkeys([*arm_order, *self._arms]))
            arms = {
                n: arm_summary(self._arms.get(n, ArmCounts()), arm_tasks.get(n, ())) for n in names
            }
        add_vs_control(arms, names)
        return {"arms": arms}

    # ------------------------------------------------------------------ internals
    def _pending_request(self, request_id: str) -> tuple[str, tuple[str, ...] | None, array[float]]:
        entry = self._pending.get(request_id)
        if entry is None:
            raise UnknownRequestError(
                f"unknown request id {request_id!r}: not scored by this service, its feedback "
                f"was already recorded, or it is older than the last {self.max_pending:,} "
                "scored impressions"
            )
        return entry

    def _apply_impressions(
        self, request_id: str, arm: str, values: list[float], tasks: tuple[str, ...] | None
    ) -> None:
        records = len(values) // (len(tasks) if tasks else 1)
        counts = self._arms.setdefault(arm, ArmCounts())
        counts.requests += 1
        counts.impressions += records
        self._pending[request_id] = (arm, tasks, array("d", values))
        self._pending_impressions += records
        while self._pending_impressions > self.max_pending and len(self._pending) > 1:
            _, (_, dropped_tasks, dropped) = self._pending.popitem(last=False)
            self._pending_impressions -= len(dropped) // (len(dropped_tasks or ()) or 1)

    def _apply_feedback(self, request_id: str, outcomes: list[Any]) -> None:
        arm, tasks, predictions = self._pending.pop(request_id)
        counts = self._arms.setdefault(arm, ArmCounts())
        if tasks is None:
            self._pending_impressions -= len(predictions)
            task = counts.task(None)
            task.predictions.extend(predictions)
            task.outcomes.extend(outcomes)
            return
        self._pending_impressions -= len(predictions) // len(tasks)
        width = len(tasks)
        for row, outcome in enumerate(outcomes):
            for column, name in enumerate(tasks):
                value = outcome.get(name)
                if value is not None:
                    counts.task(name).add(predictions[row * width + column], value)

    def _write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
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
                record = parse_line(line)
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
            tasks = record.get("tasks")
            if tasks is None:
                values = [from_json(v) for v in record["predictions"]]
                self._apply_impressions(request_id, record["arm"], values, None)
            else:
                values = [from_json(row.get(t)) for row in record["predictions"] for t in tasks]
                self._apply_impressions(request_id, record["arm"], values, tuple(tasks))
            return True
        entry = self._pending.get(request_id)
        if entry is None:  # feedback for a request that expired from memory
            return True
        _, tasks, predictions = entry
        try:
            outcomes = check_outcomes(request_id, record["outcomes"], tasks)
        except FeedbackError:
            return False
        if len(predictions) // (len(tasks) if tasks else 1) != len(outcomes):
            return False
        self._apply_feedback(request_id, outcomes)
        return True
