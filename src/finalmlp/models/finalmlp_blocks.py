"""FinalMLP's own blocks (Mao et al., AAAI 2023): stream-specific feature gating (Sec. 3.1) and
multi-head bilinear interaction aggregation (Sec. 3.2).

Shapes: B batch, F fields, E embedding dim, H heads. Initialisation as in the reference
(FuxiCTR); see :mod:`finalmlp.models.layers`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models.layers import MLP, FeatureEmbedding


class FeatureGate(nn.Module):
    """Stream-specific feature gating (FinalMLP, Sec. 3.1): ``g = 2 * sigmoid(MLP(c))``.

    ``c`` is the flattened embedding of the context fields (own tables), or a learned
    zero-initialised vector of size E when there is no context. The gate has one value per
    element of the flat embedding (F*E). The factor 2 makes the gate start at 1, so it can
    amplify as well as suppress. Without context the gate is the same for every row: it is
    computed once per batch and broadcast, (1, F*E). As in the reference, that zero vector and
    the first gate layer start with a zero gradient (ReLU'(0) = 0); the last layer's bias learns
    the context-free gate.
    """

    def __init__(
        self,
        layout: FieldLayout,
        embedding_dim: int,
        context_fields: Sequence[str],
        hidden_units: Sequence[int],
    ) -> None:
        super().__init__()
        self.context = (
            FeatureEmbedding(layout, embedding_dim, fields=context_fields)
            if context_fields
            else None
        )
        # Not named weight/bias: like the reference's fs_ctx_bias, no L2 penalty applies to it.
        self.context_vector = (
            None if context_fields else nn.Parameter(torch.zeros(1, embedding_dim))
        )
        input_dim = embedding_dim * max(1, len(context_fields))
        gate_dim = embedding_dim * layout.num_fields
        self.mlp = MLP(input_dim, hidden_units, output_dim=gate_dim)

    def forward(self, batch: Batch) -> torch.Tensor:
        if self.context is None:
            assert self.context_vector is not None
            return self.values(self.context_vector)  # (1, F*E)
        if self._categorical_only and not _exporting():
            shared = self._over_distinct_ids(batch)
            if shared is not None:
                return shared
        return self.values(self.context(batch).flatten(start_dim=1))  # (B, F*E)

    def values(self, context: torch.Tensor) -> torch.Tensor:
        """Gate values of flat context embeddings: (N, F_ctx*E) -> (N, F*E)."""
        return 2.0 * torch.sigmoid(self.mlp(context))

    def _over_distinct_ids(self, batch: Batch) -> torch.Tensor | None:
        """The gate is a function of the context ids alone: the MLP runs once per distinct id
        (combination) of the batch and every row gets its value; the same numbers and
        gradients as per row, for a fraction of the multiply-adds. None when no id repeats."""
        assert self.context is not None
        ids = batch.categorical[:, self.context.cat_cols]  # (B, F_ctx)
        if ids.shape[1] == 1:  # 1-d unique is much faster than unique over rows
            distinct, rows = torch.unique(ids[:, 0], return_inverse=True)
            distinct = distinct.unsqueeze(1)
        else:
            distinct, rows = torch.unique(ids, dim=0, return_inverse=True)
        if distinct.shape[0] == ids.shape[0]:
            return None
        context = self.context.embed_categorical(distinct).flatten(start_dim=1)
        return torch.index_select(self.values(context), 0, rows)  # (B, F*E)

    @property
    def _categorical_only(self) -> bool:
        context = self.context
        return context is not None and context.numeric is None and not context.seq_cols


def _exporting() -> bool:
    """Tracing or exporting (ONNX, TorchScript): keep the graph free of data-dependent ops."""
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


class InteractionAggregation(nn.Module):
    """Multi-head bilinear fusion (FinalMLP, Sec. 3.2).

    ``logit = b + w1.o1 + w2.o2 + sum_h o1_h^T W_h o2_h`` with o1 (B, d1), o2 (B, d2) split into
    H contiguous heads and W_h of shape (d1/H, d2/H). Returns (B,).
    """

    def __init__(self, dim1: int, dim2: int, num_heads: int = 1) -> None:
        super().__init__()
        if num_heads < 1 or dim1 % num_heads or dim2 % num_heads:
            raise ConfigError(
                f"num_heads={num_heads} must divide both stream widths {dim1} and {dim2}"
            )
        self.num_heads = num_heads
        self.head1, self.head2 = dim1 // num_heads, dim2 // num_heads
        self.linear1 = nn.Linear(dim1, 1)
        # Two biases (summing to b) as in the reference, so Adam moves b as it does there.
        self.linear2 = nn.Linear(dim2, 1)
        self.bilinear = nn.Parameter(torch.empty(num_heads, self.head1, self.head2))
        # Reference: xavier-normal on a (H*d1/H*d2/H, 1) parameter.
        std = math.sqrt(2.0 / (num_heads * self.head1 * self.head2 + 1))
        nn.init.normal_(self.bilinear, std=std)

    def forward(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        h1 = o1.view(-1, self.num_heads, self.head1)  # (B, H, d1/H)
        h2 = o2.view(-1, self.num_heads, self.head2)  # (B, H, d2/H)
        projected = torch.einsum("bhi,hij->bhj", h1, self.bilinear)  # (B, H, d2/H)
        bilinear = (projected * h2).sum(dim=(1, 2))  # (B,)
        return self.linear1(o1).squeeze(-1) + self.linear2(o2).squeeze(-1) + bilinear
