"""Sequence pooling: masked mean, masked sum, and DIN's target attention; the Dice activation.

Each pooling module maps the items of one sequence field to one field embedding::

    items (B, L, E), mask (B, L) bool, target (B, E) or None  ->  (B, E)

so any model of the zoo can use attention-pooled histories: it sees one more field.

DIN: Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018
(arXiv 1706.06978). The user's interest in candidate ``v_A`` is ``sum_j a(e_j, v_A) e_j``
(Eq. 3) over the behaviour embeddings ``e_j``; the local activation unit ``a`` is an MLP over
``[e_j, v_A, e_j - v_A, e_j * v_A]`` (the paper's figure draws an outer product; like FuxiCTR's
``DIN_Attention`` we use the element-wise product). The weights are not softmax-normalised by
default, as in the paper ("to reserve the intensity of user interests").
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.layout import Pooling


class Dice(nn.Module):
    """Data-adaptive activation (DIN, Eq. 5): ``p(s) * s + (1 - p(s)) * alpha * s`` with
    ``p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps))``: batch statistics when training,
    moving averages at inference (as BatchNorm1d without affine parameters keeps them).
    ``alpha`` is learned per unit and starts at 0, as in FuxiCTR. (N, H) in and out.

    ``mask`` (N,) selects the rows the batch statistics are taken over: the attention unit
    leaves out padded positions, which FuxiCTR's Dice counts (so padding there shifts the
    statistics and gets a gradient through them).
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_units: int, eps: float = 1e-9, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.alpha = nn.Parameter(torch.zeros(num_units))
        self.register_buffer("running_mean", torch.zeros(num_units))
        self.register_buffer("running_var", torch.ones(num_units))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            weight = torch.ones_like(x[:, :1]) if mask is None else mask.to(x.dtype)[:, None]
            count = weight.sum().clamp(min=1.0)
            mean = (x * weight).sum(dim=0) / count  # (H,)
            var = ((x - mean).pow(2) * weight).sum(dim=0) / count
            with torch.no_grad():  # BatchNorm's update: the unbiased variance is kept
                unbiased = var * count / (count - 1).clamp(min=1.0)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        p = torch.sigmoid((x - mean) / torch.sqrt(var + self.eps))
        return p * x + (1.0 - p) * self.alpha * x


class ActivationUnit(nn.Module):
    """DIN's local activation unit: one weight per behaviour. (B, L, E) x (B, E) -> (B, L).

    Hidden layers Linear -> Dice (or PReLU), then a Linear to one score, as FuxiCTR's
    ``DIN_Attention`` (no output activation, no dropout).
    """

    def __init__(self, embedding_dim: int, hidden_units: tuple[int, ...], kind: str) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        self.activations = nn.ModuleList()
        width = 4 * embedding_dim
        for units in hidden_units:
            self.linears.append(nn.Linear(width, units))
            self.activations.append(Dice(units) if kind == "dice" else nn.PReLU(units))
            width = units
        self.output = nn.Linear(width, 1)

    def forward(
        self, keys: torch.Tensor, query: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = query.unsqueeze(1).expand_as(keys)  # (B, L, E)
        features = torch.cat([q, keys, q - keys, q * keys], dim=-1)  # (B, L, 4E)
        hidden = features.reshape(-1, features.shape[-1])  # (B*L, 4E)
        rows = None if mask is None else mask.reshape(-1)  # (B*L,)
        for linear, act in zip(self.linears, self.activations, strict=True):
            hidden = linear(hidden)
            hidden = act(hidden, rows) if isinstance(act, Dice) else act(hidden)
        return self.output(hidden).view(keys.shape[:2])  # (B, L)


class TargetAttention(nn.Module):
    """``sum_j w_j * k_j`` with ``w_j = unit(k_j, q)``, padding masked (weight 0).

    With ``softmax`` the weights of the real items are normalised to sum to 1. An empty
    sequence pools to zero either way.
    """

    def __init__(self, embedding_dim: int, pooling: Pooling) -> None:
        super().__init__()
        self.unit = ActivationUnit(embedding_dim, pooling.hidden_units, pooling.activation)
        self.softmax = pooling.softmax

    def weights(
        self, items: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The weight of each item, 0 on padding: (B, L)."""
        scores = self.unit(items, target, mask)  # (B, L)
        if self.softmax:
            scores = scores.masked_fill(~mask, -1e9).softmax(dim=-1)
        return scores * mask.to(scores.dtype)

    def forward(
        self, items: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        assert target is not None
        weights = self.weights(items, mask, target)
        return (weights.unsqueeze(-1) * items).sum(dim=1)  # (B, E)


class MeanPooling(nn.Module):
    """Masked mean; an empty sequence gives zero."""

    def forward(
        self, items: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        weight = mask.unsqueeze(-1).to(items.dtype)  # (B, L, 1)
        return (items * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)


class SumPooling(nn.Module):
    """Masked sum; an empty sequence gives zero."""

    def forward(
        self, items: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None = None
    ) -> torch.Tensor:
        return (items * mask.unsqueeze(-1).to(items.dtype)).sum(dim=1)


def pooling_module(pooling: Pooling, embedding_dim: int) -> nn.Module:
    if pooling.kind == "attention":
        return TargetAttention(embedding_dim, pooling)
    return SumPooling() if pooling.kind == "sum" else MeanPooling()
