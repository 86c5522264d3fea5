"""Probabilities from a model and encoded rows: the one scoring loop under training's
validation, batch prediction, serving, calibration and the report.

It knows models and encoded splits, nothing of training, files or HTTP.

Example:
    >>> probs = predict_proba(model, split, batch_size=16384)  # (N, T) float64
"""

from __future__ import annotations

import numpy as np
import torch

from finalmlp.data.split import BatchLoader, EncodedSplit
from finalmlp.models.base import CTRModel


@torch.no_grad()
def predict_proba(
    model: CTRModel,
    split: EncodedSplit,
    batch_size: int = 16384,
    rows: tuple[int, int] | None = None,
) -> np.ndarray:
    """Score rows of a split with the model in eval mode.

    Args:
        model: any model of the zoo (logits (B, T)).
        split: encoded rows (labels are not used).
        batch_size: rows per forward pass.
        rows: (start, stop) to score only these rows (a torchrun rank's shard); default all.

    Returns:
        (N, T) float64 probabilities in row order, one column per task.
    """
    model.eval()
    device = next(model.parameters()).device
    start, stop = rows if rows is not None else (0, split.num_rows)
    out = np.empty((stop - start, model.num_tasks), dtype=np.float64)
    done = 0
    for batch in BatchLoader(split, batch_size, shuffle=False, rows=(start, stop)):
        logits = model(batch.to(device))  # (B, T)
        out[done : done + batch.size] = torch.sigmoid(logits.double()).cpu().numpy()
        done += batch.size
    return out
