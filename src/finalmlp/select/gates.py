"""OptFS gates on the shared field embedding: one per feature value, or one per field.

OptFS (Lyu et al., "Optimizing Feature Set for Click-Through Rate Prediction", WWW 2023)
gives every feature value ``j`` a mask parameter ``m_j`` and multiplies the embedding the value
contributes by a gate. During the search the gate is relaxed and sharpened by learning by
continuation::

    g_j(t)  = sigmoid(tau_t * m_j) / sigmoid(m_0)        m_0 = mask_init: every gate starts at 1
    tau_t   = T ** (t / (S - 1))                         epoch t = 0 .. S-1, T the final temperature
    L       = BCE(y, f(e * g)) + lambda * sum_j sigmoid(tau_t * m_j)     (the L1 norm of the gates)

and after the search it is made binary, ``g_j = 1[m_j > 0]``: the kept set. The reference code
(fuyuanlyu/OptFS) scales the mask by ``tau`` in the same way and multiplies the temperature by
``T ** (1 / (S - 1))`` after each epoch.

Here the gate works on every :class:`~finalmlp.models.layers.FeatureEmbedding` of a model
(FinalMLP's gate contexts and the first-order tables of DeepFM/Wide&Deep included), so any zoo
model is searched without model code: value gates scale the looked-up rows (``row_gate``, so
sequence items are gated before pooling) and the numeric fields' vectors (a numeric field is one
value); field gates scale a module's (B, F, E) output. Padding and OOV rows are never gated:
dropped values become OOV. Fields in ``keep_fields`` get no gate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.features.tables import FIRST_ID
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.finalmlp_blocks import FeatureGate
from finalmlp.models.layers import FeatureEmbedding


def embedding_modules(model: nn.Module) -> list[tuple[str, FeatureEmbedding]]:
    """The model's field embeddings, by module name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FeatureEmbedding)]


def context_module_names(model: nn.Module) -> set[str]:
    """Names of the FeatureEmbeddings that embed FinalMLP gate contexts."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, FeatureGate) and module.context is not None:
            names.add(f"{name}.context" if name else "context")
    return names


def module_tables(module: FeatureEmbedding, layout: FieldLayout) -> list[tuple[int, int]]:
    """(table index, first row in the module's fused table) of each table the module uses, as
    FeatureEmbedding lays them out."""
    cat_cols = module.cat_cols.tolist()
    used = sorted(
        {layout.categorical_tables[i] for i in cat_cols}
        | {layout.sequence_tables[i] for i in module.seq_cols}
    )
    out, start = [], 0
    for table in used:
        out.append((table, start))
        start += layout.table_sizes[table]
    return out


def module_fields(module: FeatureEmbedding, layout: FieldLayout) -> list[str]:
    """The names of a module's fields in the order of its (B, F, E) output."""
    return (
        [layout.categorical_fields[i] for i in module.cat_cols.tolist()]
        + [layout.numeric_fields[i] for i in module.num_cols.tolist()]
        + [layout.sequence_fields[i] for i in module.seq_cols]
    )


class Gates(nn.Module):
    """The mask parameters of one search; ``install`` hooks them into a model.

    Args:
        layout: the full field layout.
        level: ``value`` or ``field``.
        mask_init: initial mask value ``m_0``.
        keep_fields: fields without a gate (always kept).
    """

    def __init__(
        self, layout: FieldLayout, level: str, mask_init: float, keep_fields: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.layout, self.level = layout, level
        self.temperature = 1.0
        self.scale = 1.0 / _sigmoid(mask_init)
        keep = set(keep_fields)
        # Gate index of each unit: a table's rows (value level) or a field; -1: no gate.
        self.table_start: dict[int, int] = {}
        self.field_index: dict[str, int] = {}
        count = 0
        if level == "value":
            kept_tables = {
                layout.categorical_tables[i]
                for i, n in enumerate(layout.categorical_fields)
                if n in keep
            } | {
                layout.sequence_tables[i] for i, n in enumerate(layout.sequence_fields) if n in keep
            }
            for table, size in enumerate(layout.table_sizes):
                if table not in kept_tables:
                    self.table_start[table] = count
                    count += size - FIRST_ID
            for name in layout.numeric_fields:
                if name not in keep:
                    self.field_index[name] = count
                    count += 1
        else:
            for name in layout.field_names:
                if name not in keep:
                    self.field_index[name] = count
                    count += 1
        self.mask = nn.Parameter(torch.full((count,), float(mask_init)))
        self._handles: list[Any] = []
        self._gated: list[FeatureEmbedding] = []

    @property
    def num_gates(self) -> int:
        return int(self.mask.numel())

    def values(self) -> torch.Tensor:
        """The relaxed gates ``sigmoid(tau * m) / sigmoid(m_0)``, one per mask."""
        return torch.sigmoid(self.temperature * self.mask) * self.scale

    def penalty(self) -> torch.Tensor:
        """``sum_j sigmoid(tau * m_j)``: the L1 norm of the (unscaled) gates."""
        return torch.sigmoid(self.temperature * self.mask).sum()

    def kept(self) -> torch.Tensor:
        """The binary gates ``1[m > 0]`` (bool, one per mask)."""
        return self.mask.detach() > 0

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        """Gates at gate indices, 1 where the index is -1."""
        gate = torch.sigmoid(self.temperature * self.mask[index.clamp(min=0)]) * self.scale
        return torch.where(index >= 0, gate, torch.ones_like(gate))

    # ------------------------------------------------------------------ hooks
    def install(self, model: nn.Module) -> int:
        """Gate every FeatureEmbedding of ``model``; returns how many were gated."""
        contexts = context_module_names(model)
        for name, module in embedding_modules(model):
            if self.level == "value":
                self._install_value(module)
            elif name not in contexts:  # field level: a context is gated through its fields'
                self._install_field(module)  # embeddings in the streams it gates
            self._gated.append(module)
        return len(self._gated)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._gated:
            module.row_gate = None
        self._handles, self._gated = [], []

    def _install_value(self, module: FeatureEmbedding) -> None:
        layout = self.layout
        rows = torch.full((module.table.num_embeddings,), -1, dtype=torch.long)
        for table, start in module_tables(module, layout):
            if table in self.table_start:
                size = layout.table_sizes[table] - FIRST_ID
                first = self.table_start[table]
                rows[start + FIRST_ID : start + FIRST_ID + size] = torch.arange(first, first + size)
        index = rows.to(module.table.weight.device)
        module.row_gate = lambda ids: self._gather(index[ids]).unsqueeze(-1)
        if module.numeric is not None:
            names = [layout.numeric_fields[i] for i in module.num_cols.tolist()]
            num_index = torch.tensor([self.field_index.get(n, -1) for n in names])
            num_index = num_index.to(module.table.weight.device)
            self._handles.append(
                module.numeric.register_forward_hook(
                    lambda _m, _i, out: out * self._gather(num_index).unsqueeze(-1)
                )
            )

    def _install_field(self, module: FeatureEmbedding) -> None:
        names = module_fields(module, self.layout)
        index = torch.tensor([self.field_index.get(n, -1) for n in names])
        index = index.to(module.table.weight.device)
        self._handles.append(
            module.register_forward_hook(
                lambda _m, _i, out: out * self._gather(index).view(1, -1, 1)
            )
        )


class GatedModel(CTRModel):
    """A model searched with gates: its logits, and ``sparsity * penalty`` added to its
    regularisation (which the trainer adds to the loss every step)."""

    def __init__(self, base: CTRModel, gates: Gates, sparsity: float) -> None:
        super().__init__()
        self.base, self.gates, self.sparsity = base, gates, sparsity
        self.num_tasks = base.num_tasks
        gates.install(base)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.base(batch)

    def auxiliary_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor | None:
        return self.base.auxiliary_loss(logits, label)

    def regularization(
        self, embedding_l2: float, net_l2: float, batch_rows_only: bool = False
    ) -> torch.Tensor:
        reg = self.base.regularization(embedding_l2, net_l2, batch_rows_only)
        if self.sparsity == 0:
            return reg
        return reg + self.sparsity * self.gates.penalty()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
