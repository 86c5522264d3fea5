"""Process-group helpers in one process: no-ops, and the shard arithmetic."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from finalmlp.train.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    gather_rows,
    init_distributed,
    shard_bounds,
    sum_over_ranks,
)


def test_without_torchrun_everything_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed(torch.device("cpu"), 10.0)
    assert context == SINGLE_PROCESS and not context.enabled and context.is_main
    values = np.arange(5.0)
    assert gather_rows(values, context) is values
    assert sum_over_ranks([1.0, 2.0], context) == [1.0, 2.0]


@pytest.mark.parametrize("rows", [0, 1, 7, 10, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_cover_all_rows_once_in_order(rows: int, world: int) -> None:
    bounds = [shard_bounds(rows, DistributedContext(r, world)) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    for (_, stop), (start, _) in itertools.pairwise(bounds):
        assert stop == start
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
