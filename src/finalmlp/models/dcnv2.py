"""DCNv2: a full-rank cross network, stacked with, beside, or without a DNN.

Wang, Shivanna, Cheng, Jain, Lin, Hong, Chi. "DCN V2: Improved Deep & Cross Network and
Practical Lessons for Web-scale Learning to Rank Systems", WWW 2021. ``x0`` is the flat field
embedding; each cross layer is ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``, W_l a full (D, D)
matrix. Structures: ``stacked`` feeds the cross output to the MLP, ``parallel`` concatenates
both outputs, ``crossnet_only`` uses the cross network alone; a Linear maps the result to the
logit. The reference's fourth structure (``stacked_parallel``) is left out.

``low_rank_mixture`` replaces each W_l by a softmax-gated mixture of K low-rank experts with
tanh in the low-rank space (the paper's "DCN-Mix"), as the reference's CrossNetMix computes it:
``x_{l+1} = sum_k G_k(x_l) * x0 * (U_k tanh(C_k tanh(V_k^T x_l)) + b_l) + x_l`` with
``G(x_l) = softmax_k(g_k . x_l)`` and ``b_l`` shared by the experts. Follows the reference
(FuxiCTR ``model_zoo/DCNv2``) in structure and initialisation: xavier-normal W_l, U, V, C and
gates, zero biases; like there, U, V, C and the mixture's biases are not under ``net_l2``.
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import DCNv2Config


class CrossNetV2(nn.Module):
    """``num_layers`` full-rank cross layers ``x0 * (W x + b) + x``. (B, D) -> (B, D)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class CrossNetMix(nn.Module):
    """Cross layers as a gated mixture of low-rank experts (DCN-Mix). (B, D) -> (B, D).

    Args:
        input_dim: D.
        num_layers: L.
        low_rank: r, the experts' inner width.
        num_experts: K.
    """

    def __init__(self, input_dim: int, num_layers: int, low_rank: int, num_experts: int) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.empty(num_layers, num_experts, input_dim, low_rank))
        self.v = nn.Parameter(torch.empty(num_layers, num_experts, input_dim, low_rank))
        self.c = nn.Parameter(torch.empty(num_layers, num_experts, low_rank, low_rank))
        self.layer_bias = nn.Parameter(torch.zeros(num_layers, input_dim))
        # One bias-free Linear(D, 1) per expert, as the reference (same init, under net_l2).
        self.gates = nn.ModuleList(nn.Linear(input_dim, 1, bias=False) for _ in range(num_experts))
        with torch.no_grad():
            for layer in range(num_layers):  # reference: xavier-normal of each (K, D, r) block
                for param in (self.u, self.v, self.c):
                    nn.init.xavier_normal_(param[layer])

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in range(self.u.shape[0]):
            gate_logits = torch.cat([gate(x) for gate in self.gates], dim=1)  # (B, K)
            scores = torch.softmax(gate_logits, dim=1)
            low = torch.tanh(torch.einsum("bd,kdr->bkr", x, self.v[layer]))  # (B, K, r)
            low = torch.tanh(torch.einsum("bkr,ksr->bks", low, self.c[layer]))  # (B, K, r)
            up = torch.einsum("bkr,kdr->bkd", low, self.u[layer]) + self.layer_bias[layer]
            experts = x0.unsqueeze(1) * up  # (B, K, D)
            x = x + (scores.unsqueeze(-1) * experts).sum(dim=1)  # (B, D)
        return x


class DCNv2(CTRModel):
    """Cross network (full-rank or low-rank mixture) and MLP wired by ``config.structure``.

    Example:
        >>> model = DCNv2(layout, DCNv2Config(structure="parallel", num_cross_layers=4))
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: DCNv2Config) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        flat_dim = config.embedding_dim * layout.num_fields
        num_layers, mixture = config.num_cross_layers, config.low_rank_mixture
        self.cross: CrossNetV2 | CrossNetMix = (
            CrossNetV2(flat_dim, num_layers)
            if mixture is None
            else CrossNetMix(flat_dim, num_layers, mixture.low_rank, mixture.num_experts)
        )
        self.mlp: MLP | None = None
        head_dim = flat_dim  # crossnet_only
        if config.structure != "crossnet_only":
            self.mlp = MLP.from_config(flat_dim, config.mlp)
            head_dim = self.mlp.output_dim + (flat_dim if config.structure == "parallel" else 0)
        self.output = nn.Linear(head_dim, 1)
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        crossed = self.cross(x0)  # (B, F*E)
        if self.mlp is None:  # crossnet_only
            hidden = crossed
        elif self.config.structure == "stacked":
            hidden = self.mlp(crossed)  # (B, H)
        else:  # parallel
            hidden = torch.cat([crossed, self.mlp(x0)], dim=1)  # (B, F*E + H)
        return self.output(hidden)  # (B, 1)
