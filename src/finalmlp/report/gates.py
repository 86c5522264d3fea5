"""Mean gate value per field of each gated stream: FinalMLP's feature selection made visible.

Each stream's gate ``g = 2 sigmoid(MLP(context))`` (FinalMLP, Sec. 3.1) scales every element of
the flat embedding (B, F*E). A field's gate value is the mean over its E columns, averaged over
the rows of a split: above 1 the stream amplifies the field, below 1 it suppresses it. A
context-free gate is the same for every row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch

from finalmlp.batch import Batch
from finalmlp.data.dataset import EncodedSplit
from finalmlp.data.split import BatchLoader
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.finalmlp_blocks import FeatureGate

GateFunction = Callable[[Batch], Sequence[torch.Tensor]]


def gate_function(model: CTRModel) -> GateFunction | None:
    """``model.gates`` when the model exposes it and actually gates (FinalMLP with ``use_fs``:
    without it FinalMLP's gates are constant ones), else None."""
    gates = getattr(model, "gates", None)
    if callable(gates) and any(isinstance(m, FeatureGate) for m in model.modules()):
        return cast(GateFunction, gates)
    return None


def stream_names(model: CTRModel, num_streams: int) -> list[str]:
    """``stream 1 (context: user)``, ...; the context from ``model.config.fs{i}_context``."""
    config = getattr(model, "config", None)
    names = []
    for stream in range(1, num_streams + 1):
        context = getattr(config, f"fs{stream}_context", None)
        if isinstance(context, Sequence) and not isinstance(context, str):
            where = ", ".join(context) if context else "none"
            names.append(f"stream {stream} (context: {where})")
        else:
            names.append(f"stream {stream}")
    return names


@torch.no_grad()
def mean_gates(
    model: CTRModel, split: EncodedSplit, layout: FieldLayout, batch_size: int = 16384
) -> dict[str, np.ndarray]:
    """Mean gate value per field for each stream, over the rows of ``split``.

    Returns:
        ``{stream name: (F,) array}`` in layout field order; empty when the model has no gates.
    """
    gates_of = gate_function(model)
    if gates_of is None:
        return {}
    model.eval()
    device = next(model.parameters()).device
    num_fields = layout.num_fields
    sums: list[np.ndarray] = []
    for batch in BatchLoader(split, batch_size):
        gates = gates_of(batch.to(device))
        for stream, gate in enumerate(gates):
            per_field = gate.double().view(gate.shape[0], num_fields, -1).mean(dim=2)  # (B|1, F)
            total = per_field.sum(dim=0) * (batch.size if gate.shape[0] == 1 else 1)
            if stream == len(sums):
                sums.append(np.zeros(num_fields))
            sums[stream] += total.cpu().numpy()
    names = stream_names(model, len(sums))
    return {name: total / split.num_rows for name, total in zip(names, sums, strict=True)}
