"""Micro-batching: concurrent requests to the same Scorer share model calls.

At most ``workers`` scoring calls run at once per scorer, each in a thread. A request that finds
a worker free is scored at once (after an optional ``wait_s``), so batching adds no wait at low
load; requests that arrive while every worker is busy queue up, and the next free worker scores
all of them (up to ``max_rows`` rows) in one call, each getting its own slice of the result.
Under load this amortises the per-call overhead (validation, encoding, a forward pass) instead
of running every request in a thread of its own (see docs/serving.md, "Load test").

Each request is validated before it joins a queue (:meth:`Scorer.prepare`, by the caller), so a
bad record costs only its own request: a batch holds valid requests only. A batch that still
fails (an unexpected error) is scored again request by request, so each request gets its own
error or its own scores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np

from finalmlp.serve.scorer import Prepared, Scorer


@dataclass
class _Queue:
    scorer: Scorer
    items: list[tuple[Prepared, asyncio.Future[np.ndarray]]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class MicroBatcher:
    """Scores requests of concurrent callers in batches, ``workers`` calls per scorer at a time.

    Args:
        max_rows: most rows in one scoring call (a larger single request is scored alone).
        wait_s: how long an idle worker waits for companions before scoring a request.
        workers: scoring calls in flight per scorer (threads; one per core to use). Requests
            wait, and are batched, only when every worker is busy.
        on_batch: called with (rows, requests) of each scoring call (for metrics).

    Example:
        >>> batcher = MicroBatcher(max_rows=1024, workers=2)
        >>> scores = await batcher.score(scorer, scorer.prepare([{"user": "1"}]))
    """

    def __init__(
        self,
        max_rows: int = 1024,
        wait_s: float = 0.0,
        workers: int = 2,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.workers = workers
        self.on_batch = on_batch
        self._queues: dict[int, _Queue] = {}

    async def score(self, scorer: Scorer, records: Prepared) -> np.ndarray:
        """Probabilities (N, T) for prepared records (``scorer.prepare``), not checked to be
        finite; raises what ``scorer.score_prepared`` raises."""
        queue = self._queues.get(id(scorer))
        if queue is None:
            queue = self._queues[id(scorer)] = _Queue(scorer)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        queue.items.append((records, future))
        if len(queue.tasks) < self.workers:
            queue.tasks.add(asyncio.create_task(self._drain(queue)))
        return await future

    async def _drain(self, queue: _Queue) -> None:
        try:
            if self.wait_s > 0:  # else requests already here join: the task starts after them
                await asyncio.sleep(self.wait_s)
            while queue.items:
                batch = self._take(queue)
                await self._score_batch(queue.scorer, batch)
        finally:
            queue.tasks.discard(asyncio.current_task())
            if queue.items and not queue.tasks:  # only after a crash: serve those waiting
                queue.tasks.add(asyncio.create_task(self._drain(queue)))
            elif not queue.tasks:  # the scorer may be replaced (reload): drop its queue
                self._queues.pop(id(queue.scorer), None)

    def _take(self, queue: _Queue) -> list[tuple[Prepared, asyncio.Future[np.ndarray]]]:
        rows, count = 0, 0
        for records, _ in queue.items:
            if count and rows + records.num_rows > self.max_rows:
                break
            rows += records.num_rows
            count += 1
        batch, queue.items = queue.items[:count], queue.items[count:]
        return batch

    async def _score_batch(
        self, scorer: Scorer, batch: list[tuple[Prepared, asyncio.Future[np.ndarray]]]
    ) -> None:
        records = Prepared.concat([request for request, _ in batch])
        try:
            scores = await anyio.to_thread.run_sync(scorer.score_prepared, records)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], error=exc)
            else:  # find whose records failed: each request on its own
                for request, future in batch:
                    await self._score_batch(scorer, [(request, future)])
            return
        if self.on_batch is not None:
            self.on_batch(records.num_rows, len(batch))
        start = 0
        for request, future in batch:
            _settle(future, result=scores[start : start + request.num_rows])
            start += request.num_rows


def _settle(
    future: asyncio.Future[np.ndarray],
    result: np.ndarray | None = None,
    error: BaseException | None = None,
) -> None:
    if future.done():  # the caller went away (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result if result is not None else np.empty(0))
