"""Running the same training under ``torchrun``: process group, ranks, gathers.

``finalmlp train`` needs no change to run on N processes: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address, and :func:`init_distributed` joins the
group (gloo on CPU, nccl on CUDA). Without those variables everything runs in one process and
every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from finalmlp.data.split import part_bounds
from finalmlp.errors import ConfigError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"  # gloo, nccl, or none (one process)
    owns_group: bool = False  # we joined it (torchrun), so we leave it; Ray's is Ray's

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def collective_device(self) -> torch.device:
        """Where tensors must live for this backend's collectives."""
        return (
            torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")
        )


SINGLE_PROCESS = DistributedContext()


def init_distributed(device: torch.device, timeout_s: float) -> DistributedContext:
    """Join the torchrun process group if this process was started by torchrun.

    Args:
        device: the training device; CUDA selects nccl (one GPU per process, by local rank),
            the CPU selects gloo.
        timeout_s: how long a collective may wait for the other ranks: a rank that died or
            hangs ends the job with a timeout error instead of a hang.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():  # e.g. started by Ray Train
        if dist.get_world_size() <= 1:
            return SINGLE_PROCESS
        backend = str(dist.get_backend())
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    rank = int(os.environ["RANK"])
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        if torch.cuda.device_count() <= local_rank:
            raise ConfigError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU, or set train.device: cpu"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistributedContext(rank, world_size, local_rank, backend, owns_group=True)


def process_device(device: torch.device, context: DistributedContext) -> torch.device:
    """The device of this process: its own GPU under nccl, else ``device``."""
    if context.enabled and device.type == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()


def shard_bounds(num_rows: int, context: DistributedContext) -> tuple[int, int]:
    """Contiguous rows [start, stop) of this rank; shards differ in size by at most one."""
    return part_bounds(num_rows, context.rank, context.world_size)


def gather_rows(values: np.ndarray, context: DistributedContext) -> np.ndarray:
    """Concatenate every rank's rows in rank order (shards from :func:`shard_bounds`): (n,) or
    (n, T) arrays, T the same on every rank."""
    if not context.enabled:
        return values
    if values.ndim == 2:
        width = values.shape[1]
        return gather_rows(values.reshape(-1), context).reshape(-1, width)
    device = context.collective_device
    local = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(context.world_size)]
    dist.all_gather(sizes, torch.tensor([local.numel()], dtype=torch.int64, device=device))
    counts = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(counts), dtype=torch.float64, device=device)
    padded[: local.numel()] = local
    parts = [torch.zeros_like(padded) for _ in range(context.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]).cpu().numpy()


def sum_over_ranks(values: list[float], context: DistributedContext) -> list[float]:
    """Element-wise sum of small float vectors over all ranks (identity in one process)."""
    if not context.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=context.collective_device)
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def sum_tensor_over_ranks(values: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Element-wise sum of a small tensor over all ranks (itself in one process)."""
    if not context.enabled:
        return values
    total = values.detach().to(context.collective_device, copy=True)
    dist.all_reduce(total)
    return total.to(values.device)


def cleanup(context: DistributedContext) -> None:
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()
