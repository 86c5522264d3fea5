"""DCN: a cross network beside a DNN, ``logit = w . [CrossNet(x0), MLP(x0)] + b``.

Wang, Fu, Fu, Wang. "Deep & Cross Network for Ad Click Predictions", ADKDD 2017. ``x0`` is
the flat field embedding; each cross layer is ``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l``, so
layer l holds crosses of degree up to l+1 with 2*D parameters. Follows the reference (FuxiCTR
``model_zoo/DCN``) in structure and initialisation: the rank-1 weight is a bias-free
Linear(D, 1) with xavier-normal init, the layer bias starts at 0, and both are under ``net_l2``.
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import DCNConfig


class CrossLayer(nn.Module):
    """One DCN cross layer: ``x0 * (x . w) + b + x``. (B, D), (B, D) -> (B, D)."""

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        self.weight = nn.Linear(input_dim, 1, bias=False)  # w: the scalar x . w per row
        self.bias = nn.Parameter(torch.zeros(input_dim))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.weight(x) + self.bias + x  # (B, 1) broadcast over D


class CrossNet(nn.Module):
    """``num_layers`` cross layers, each crossing with the input ``x0``. (B, D) -> (B, D)."""

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossLayer(input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = layer(x0, x)
        return x


class DCN(CTRModel):
    """Cross network and MLP over the flat embedding, outputs concatenated, then Linear to 1.

    Example:
        >>> model = DCN(layout, DCNConfig(num_cross_layers=3))
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: DCNConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        flat_dim = config.embedding_dim * layout.num_fields
        self.cross = CrossNet(flat_dim, config.num_cross_layers)
        self.mlp = MLP.from_config(flat_dim, config.mlp)
        self.output = nn.Linear(flat_dim + self.mlp.output_dim, 1)
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        x0 = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        stacked = torch.cat([self.cross(x0), self.mlp(x0)], dim=1)  # (B, F*E + H)
        return self.output(stacked)  # (B, 1)
