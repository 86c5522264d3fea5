"""The training loss over T tasks: weighted binary cross-entropy over each task's labelled rows.

``loss = sum_t w_t * (sum over rows with a label for t of BCE(logit_t, y_t)) / n_t``, where
``n_t`` is the number of rows labelled for task t in the (global) batch. A row whose label is
missing for a task (NaN) adds nothing to that task's loss and is not counted in ``n_t``; it
still trains the other tasks. With one task and no missing labels this is the mean BCE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional


class TaskLoss:
    """Per-task sums and their weighted combination (see the module docstring).

    Args:
        weights: the T task weights.
    """

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights = torch.tensor([float(w) for w in weights], dtype=torch.float32)

    def sums(self, logits: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BCE summed over each task's labelled rows, and those rows' counts: (T,), (T,).

        Args:
            logits: (B, T).
            label: (B, T) 0/1, NaN where missing.
        """
        known = ~torch.isnan(label)
        target = torch.where(known, label, torch.zeros_like(label))
        losses = functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if bool(known.all()):
            return losses.sum(dim=0), torch.full_like(losses[0], float(label.shape[0]))
        return (losses * known).sum(dim=0), known.sum(dim=0).to(losses.dtype)

    def combine(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """``sum_t w_t * sums_t / max(counts_t, 1)``: a scalar."""
        weights = self.weights.to(sums.device)
        return (weights * sums / counts.clamp(min=1.0)).sum()
