"""The one batch type every model consumes.

::

    Batch
    ├── categorical  (B, C) int32   ids, one column per categorical field (0 pad, 1 OOV, 2.. vocab)
    ├── numeric      (B, D) float32 transformed numeric values
    ├── sequences    tuple of (B, L_s) int32, one per sequence field, 0-padded
    └── label        (B,)   float32 0/1, or None when scoring unlabelled rows

Batches are sliced whole from contiguous encoded arrays (see finalmlp.data.split): no per-row
collate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    categorical: torch.Tensor
    numeric: torch.Tensor
    sequences: tuple[torch.Tensor, ...] = ()
    label: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.categorical.shape[0])  # (B, C) even when C == 0

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            categorical=self.categorical.to(device, non_blocking=True),
            numeric=self.numeric.to(device, non_blocking=True),
            sequences=tuple(s.to(device, non_blocking=True) for s in self.sequences),
            label=None if self.label is None else self.label.to(device, non_blocking=True),
        )
