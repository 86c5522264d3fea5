"""Shared building blocks: field embeddings, MLP, feature gate, interaction aggregation.

Shapes: B batch, F fields, E embedding dim, H heads. Initialisation follows the reference
implementation (FuxiCTR): embeddings N(0, 1e-4) with zero padding rows, Linear weights
xavier-normal with zero biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout, Pooling
from finalmlp.models.attention import TargetAttention, pooling_module
from finalmlp.schema import MLPConfig

EMBEDDING_INIT_STD = 1e-4


class NumericEmbedding(nn.Module):
    """Numeric field d -> value_d x weight_d, a learned vector per field. (B, D) -> (B, D, E)."""

    def __init__(self, num_fields: int, embedding_dim: int) -> None:
        super().__init__()
        # Reference: nn.Linear(1, E, bias=False) with xavier-normal, std sqrt(2 / (1 + E)).
        std = math.sqrt(2.0 / (1 + embedding_dim))
        self.weight = nn.Parameter(torch.randn(num_fields, embedding_dim) * std)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return values.unsqueeze(-1) * self.weight  # (B, D, E)


class FeatureEmbedding(nn.Module):
    """Embeds the fields of a batch into (B, F, E), F in layout order.

    All tables the selected fields need are fused into one ``nn.Embedding`` with per-table row
    offsets, so a batch costs one lookup for its categorical fields. A sequence field's items
    (:meth:`embed_sequence`, padding id 0 masked out) are pooled as its layout says: masked
    mean (default), masked sum, or DIN target attention with the embedding of its target
    field as the query (see finalmlp.models.attention).

    Args:
        layout: the fields and tables of the data.
        embedding_dim: E.
        fields: names of the fields to embed (default: all). FinalMLP's gates embed their
            context fields with tables of their own, as the reference does.
        attention: pool attention fields by attention; False pools them by their mean (the
            first-order weights of LinearTerm, of dimension 1).
    """

    cat_cols: torch.Tensor
    cat_offsets: torch.Tensor
    num_cols: torch.Tensor

    def __init__(
        self,
        layout: FieldLayout,
        embedding_dim: int,
        fields: Sequence[str] | None = None,
        attention: bool = True,
    ) -> None:
        super().__init__()
        wanted = set(layout.field_names if fields is None else fields)
        cat_cols = [i for i, n in enumerate(layout.categorical_fields) if n in wanted]
        num_cols = [i for i, n in enumerate(layout.numeric_fields) if n in wanted]
        seq_cols = [i for i, n in enumerate(layout.sequence_fields) if n in wanted]
        used = sorted(
            {layout.categorical_tables[i] for i in cat_cols}
            | {layout.sequence_tables[i] for i in seq_cols}
        )
        starts, total = {}, 0
        for table in used:
            starts[table] = total
            total += layout.table_sizes[table]
        self.embedding_dim = embedding_dim
        self.num_fields = len(cat_cols) + len(num_cols) + len(seq_cols)
        self.all_categorical = len(cat_cols) == len(layout.categorical_fields)
        self.table = nn.Embedding(max(total, 1), embedding_dim)
        self.register_buffer("cat_cols", torch.tensor(cat_cols, dtype=torch.long), False)
        offsets = [starts[layout.categorical_tables[i]] for i in cat_cols]
        self.register_buffer("cat_offsets", torch.tensor(offsets, dtype=torch.int32), False)
        self.register_buffer("num_cols", torch.tensor(num_cols, dtype=torch.long), False)
        self.seq_cols = seq_cols
        self.seq_offsets = [starts[layout.sequence_tables[i]] for i in seq_cols]
        poolings = [layout.pooling(i) for i in seq_cols]
        if not attention:
            poolings = [Pooling() if p.kind == "attention" else p for p in poolings]
        self.seq_targets = [p.target if p.kind == "attention" else -1 for p in poolings]
        self.poolers = nn.ModuleList(pooling_module(p, embedding_dim) for p in poolings)
        self.numeric = NumericEmbedding(len(num_cols), embedding_dim) if num_cols else None
        self.padding_rows = [starts[t] for t in used]
        # With sparse embeddings (train.sparse_embeddings) the trainer sets track_ids: the
        # rows a training batch looks up are kept for their L2 penalty (batch_l2).
        self.track_ids = False
        self._batch_ids: list[torch.Tensor] = []
        # Set by finalmlp.select during a feature-set search: ids (..., ) -> gates (..., 1)
        # that scale the looked-up rows (None: no gate).
        self.row_gate: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.table.weight, std=EMBEDDING_INIT_STD)
        with torch.no_grad():
            self.table.weight[self.padding_rows] = 0.0

    def forward(self, batch: Batch) -> torch.Tensor:
        parts = []
        if self.cat_cols.numel():
            ids = batch.categorical if self.all_categorical else batch.categorical[:, self.cat_cols]
            parts.append(self._lookup(ids + self.cat_offsets))  # (B, C, E)
        if self.numeric is not None:
            parts.append(self.numeric(batch.numeric[:, self.num_cols]))  # (B, D, E)
        for index in range(len(self.seq_cols)):
            parts.append(self.pool_sequence(batch, index).unsqueeze(1))  # (B, 1, E)
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def lookup_rows(self, batch: Batch) -> torch.Tensor:
        """Every table row this module's fields look up for ``batch`` (with repeats and padding
        rows), flattened: the ids of mini-batch aware regularisation."""
        parts = []
        if self.cat_cols.numel():
            parts.append((batch.categorical[:, self.cat_cols] + self.cat_offsets).reshape(-1))
        for col, offset in zip(self.seq_cols, self.seq_offsets, strict=True):
            parts.append((batch.sequences[col] + offset).reshape(-1))
        if not parts:
            return torch.zeros(0, dtype=torch.long, device=self.table.weight.device)
        return torch.cat(parts).long()

    def embed_sequence(self, batch: Batch, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of this module's ``index``-th sequence field: (B, L, E) and the mask (B, L)
        of real items (padding id 0 is False)."""
        ids = batch.sequences[self.seq_cols[index]]
        return self._lookup(ids + self.seq_offsets[index]), ids > 0

    def sequence_target(self, batch: Batch, index: int) -> torch.Tensor | None:
        """The query (B, E) of an attention-pooled sequence field: its target field's
        embedding, from the same table; None for mean or sum pooling."""
        target = self.seq_targets[index]
        if target < 0:
            return None
        ids = batch.categorical[:, target : target + 1] + self.seq_offsets[index]
        return self._lookup(ids).squeeze(1)

    def pool_sequence(self, batch: Batch, index: int) -> torch.Tensor:
        """The ``index``-th sequence field as one embedding: (B, E)."""
        items, mask = self.embed_sequence(batch, index)
        return self.poolers[index](items, mask, self.sequence_target(batch, index))

    def attention_weights(self, batch: Batch, index: int) -> torch.Tensor | None:
        """The weight (B, L) the ``index``-th sequence field's attention pooling gives each
        item, 0 on padding (what :meth:`pool_sequence` sums the items with); None when the
        field is not pooled by attention."""
        pooler = self.poolers[index]
        target = self.sequence_target(batch, index)
        if not isinstance(pooler, TargetAttention) or target is None:
            return None
        items, mask = self.embed_sequence(batch, index)
        return pooler.weights(items, mask, target)

    def embed_categorical(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, C) ids of this module's categorical fields (in its field order) -> (N, C, E)."""
        return self._lookup(ids + self.cat_offsets)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        if self.track_ids and self.training:
            self._batch_ids.append(ids.reshape(-1))
        if self.table.sparse:
            rows = self.table(ids)  # sparse gradient
        else:
            # The same rows as self.table(ids); index_select's backward (an index_add) is
            # about twice as fast on CPU as the embedding backward, which sorts the ids first.
            flat = torch.index_select(self.table.weight, 0, ids.reshape(-1))
            rows = flat.view(*ids.shape, self.embedding_dim)
        return rows if self.row_gate is None else rows * self.row_gate(ids)

    def batch_l2(self) -> torch.Tensor:
        """``||w_r||^2`` summed over the distinct rows looked up since the last call (training
        batches only, with ``track_ids``): the table's L2 penalty restricted to the rows of the
        batch, whose gradient is as sparse as the lookup's."""
        if not self._batch_ids:
            return torch.zeros((), device=self.table.weight.device)
        rows = torch.unique(torch.cat(self._batch_ids))
        self._batch_ids = []
        return self.table(rows).pow(2).sum()


_MASK_LEVELS = 1 << 16  # dropout masks compare 16 random bits with a threshold


class _MaskedScale(torch.autograd.Function):
    """``x * keep * scale`` saving only the boolean mask (1 byte per element) for backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return (x * keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return (grad * keep).mul_(ctx.scale), None, None


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on CPU; the same module everywhere else.

    On CPU, ``torch.bernoulli_`` draws one 32-bit number per element serially and took a third
    of a FinalMLP training step on Frappe. Here each 64-bit draw of torch's (seeded) generator
    gives four 16-bit numbers, and an element is kept when its number is at or above a
    threshold: the drop probability is ``p`` rounded to a multiple of 1/65536 (0.2 ->
    0.19999695), and the kept values are scaled by the exact inverse keep probability, so the
    expectation is unchanged. Deterministic under ``torch.manual_seed`` and saved/restored with
    torch's RNG state like ``nn.Dropout``. In eval mode, with ``p = 0`` or on other devices
    (CUDA's own kernel is fast) it is ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        drop = round(self.p * _MASK_LEVELS)
        if drop >= _MASK_LEVELS:
            return torch.zeros_like(x)
        count = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64)
        bits = words.view(torch.int16)[:count].view(x.shape)  # uniform over int16
        keep = bits >= drop - _MASK_LEVELS // 2
        return _MaskedScale.apply(x, keep, _MASK_LEVELS / (_MASK_LEVELS - drop))


class MLP(nn.Module):
    """Per hidden layer Linear -> BatchNorm (optional) -> ReLU -> Dropout; optional output Linear.

    (B, input_dim) -> (B, hidden_units[-1]) or (B, output_dim).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_dim: int | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = units
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim))
            width = output_dim
        self.output_dim = width
        self.layers = nn.Sequential(*layers)

    @classmethod
    def from_config(cls, input_dim: int, config: MLPConfig, output_dim: int | None = None) -> MLP:
        return cls(input_dim, config.hidden_units, config.dropout, config.batch_norm, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearTerm(nn.Module):
    """First-order term ``b + sum_f w(x_f)``: one learned weight per categorical value, per numeric
    field and per sequence item (mean-pooled), as an embedding of dim 1. (B,) out.

    The linear part of FM, Wide&Deep and DeepFM. As in the reference, it has tables of its own
    (not the factors' embeddings) and the bias starts at 0.

    Args:
        layout: the fields and tables of the data.
        bias: learn a bias ``b`` (Wide&Deep's reference leaves it to its MLP's output layer).
    """

    def __init__(self, layout: FieldLayout, bias: bool = True) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(layout, embedding_dim=1, attention=False)
        self.bias = nn.Parameter(torch.zeros(1)) if bias else None

    def forward(self, batch: Batch) -> torch.Tensor:
        out = self.weights(batch).sum(dim=(1, 2))  # (B,)
        return out if self.bias is None else out + self.bias


def pairwise_interactions(embeddings: torch.Tensor) -> torch.Tensor:
    """FM's second-order term ``sum_{i<j} <e_i, e_j>`` in O(F*E) (Rendle 2010, Lemma 3.1):
    ``0.5 * sum_E ((sum_F e)^2 - sum_F e^2)``. (B, F, E) -> (B,)."""
    square_of_sum = embeddings.sum(dim=1).pow(2)  # (B, E)
    sum_of_squares = embeddings.pow(2).sum(dim=1)  # (B, E)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)


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


def reset_linear_layers(module: nn.Module) -> None:
    """Reference initialisation: xavier-normal weights, zero biases, for every nn.Linear."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.xavier_normal_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
