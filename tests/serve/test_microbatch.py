"""Micro-batching: concurrent requests share model calls, each gets its own rows or error."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from finalmlp.serve.microbatch import MicroBatcher
from finalmlp.serve.scorer import Prepared, RecordError


class SlowScorer:
    """Scores record["x"] * 2 after a pause; a record with "bad" fails; counts calls."""

    def __init__(self, pause_s: float = 0.02) -> None:
        self.pause_s = pause_s
        self.calls: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def score_prepared(self, prepared: Prepared) -> np.ndarray:
        records = [
            {k: v[i] for k, v in prepared.columns.items() if v[i] is not None}
            for i in range(prepared.num_rows)
        ]
        with self._lock:
            self.calls.append(len(records))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.pause_s)
        with self._lock:
            self.in_flight -= 1
        for index, record in enumerate(records):
            if "bad" in record:
                raise RecordError(index, "bad", "not scorable")
        return np.array([2.0 * r["x"] for r in records])


def _prepare(records: Sequence[Mapping[str, Any]]) -> Prepared:
    """Records as the columns x and bad (None where absent)."""
    columns = {name: [r.get(name) for r in records] for name in ("x", "bad")}
    return Prepared(columns, len(records))


async def _score_all(batcher: MicroBatcher, scorer: SlowScorer, requests: list[Any]) -> list[Any]:
    tasks = [batcher.score(scorer, _prepare(r)) for r in requests]  # type: ignore[arg-type]
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_concurrent_requests_are_batched_and_split_in_order() -> None:
    scorer = SlowScorer()
    batches: list[tuple[int, int]] = []
    batcher = MicroBatcher(max_rows=100, workers=1, on_batch=lambda r, n: batches.append((r, n)))
    requests = [[{"x": i}, {"x": i + 0.5}] for i in range(10)]
    results = asyncio.run(_score_all(batcher, scorer, requests))
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, [2.0 * i, 2.0 * i + 1.0])
    assert sum(scorer.calls) == 20 and len(scorer.calls) < 10  # fewer calls than requests
    assert sum(n for _, n in batches) == 10


def test_a_bad_request_fails_alone() -> None:
    scorer = SlowScorer()
    requests: list[Any] = [[{"x": 1}], [{"x": 2}, {"bad": 1}], [{"x": 3}]]
    results = asyncio.run(_score_all(MicroBatcher(workers=1), scorer, requests))
    np.testing.assert_array_equal(results[0], [2.0])
    assert isinstance(results[1], RecordError) and results[1].index == 1  # its own index
    np.testing.assert_array_equal(results[2], [6.0])


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_bound_the_calls_in_flight(workers: int) -> None:
    scorer = SlowScorer()
    batcher = MicroBatcher(max_rows=3, workers=workers)
    results = asyncio.run(_score_all(batcher, scorer, [[{"x": i}] for i in range(12)]))
    assert [float(r[0]) for r in results] == [2.0 * i for i in range(12)]
    assert scorer.most_in_flight == workers
    assert max(scorer.calls) <= 3  # max_rows
    assert batcher._queues == {}  # idle: nothing kept for a scorer that may be replaced
