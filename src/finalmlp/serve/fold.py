"""The model as served: FinalMLP gates whose context is one categorical field, precomputed.

A FinalMLP gate is ``g = 2 * sigmoid(MLP(c))``. When its context ``c`` is the embedding of a
single categorical field (Frappe: ``user`` for one stream, ``item`` for the other), ``g`` is a
function of that field's id alone, so it can be computed once for every id of the table and
looked up per row::

    FeatureGate:  ids (B,) -> embedding (B, E) -> MLP (E -> H -> F*E) -> 2 sigmoid -> (B, F*E)
    FoldedGate:   ids (B,) -> values[ids]                                        -> (B, F*E)

The same arithmetic on the same inputs, done ahead of time: scores agree with the unfolded
model to float rounding (checked at export against 1e-5). With the paper's Frappe settings
the two gates are about 60% of the model's multiply-adds per row. A gate is folded only when
its table of values stays small (:data:`FOLD_MAX_VALUES`); other gates are left as they are.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional

from finalmlp.batch import Batch
from finalmlp.models.base import CTRModel
from finalmlp.models.finalmlp import FinalMLP
from finalmlp.models.finalmlp_blocks import FeatureGate

FOLD_MAX_VALUES = 1 << 24  # ids x F*E floats (64 MiB) at most per folded gate


class FoldedGate(nn.Module):
    """A FeatureGate with one categorical context field, as a lookup: (B,) ids -> (B, F*E)."""

    values: torch.Tensor

    def __init__(self, gate: FeatureGate) -> None:
        super().__init__()
        context = gate.context
        assert context is not None and foldable(gate)
        self.column = int(context.cat_cols[0])
        self.offset = int(context.cat_offsets[0])
        with torch.no_grad():
            values = gate.values(context.table.weight)  # (V, F*E)
        self.register_buffer("values", values.contiguous())

    def forward(self, batch: Batch) -> torch.Tensor:
        ids = batch.categorical[:, self.column] + self.offset  # (B,)
        return functional.embedding(ids, self.values)  # (B, F*E)


def foldable(gate: FeatureGate | None) -> bool:
    """Whether ``gate``'s context is exactly one categorical field with a small enough table."""
    if gate is None or gate.context is None:
        return False
    context = gate.context
    single = context.cat_cols.numel() == 1 and context.numeric is None and not context.seq_cols
    size = context.table.num_embeddings * gate.mlp.output_dim
    return single and size <= FOLD_MAX_VALUES


def serving_model(model: CTRModel) -> CTRModel:
    """``model`` in eval mode with its foldable gates folded (a copy; ``model`` is unchanged).

    Models without such gates (DualMLP, LR, context-free or multi-field gates) come back as
    they are.
    """
    model.eval()
    if not isinstance(model, FinalMLP) or not (foldable(model.gate1) or foldable(model.gate2)):
        return model
    served = copy.deepcopy(model)
    for name in ("gate1", "gate2"):
        gate = getattr(served, name)
        if foldable(gate):
            setattr(served, name, FoldedGate(gate))
    return served.eval()
