"""DualMLP: the paper's plain two-stream baseline, ``logit = MLP1(e) + MLP2(e)``."""

from __future__ import annotations

import torch

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import DualMLPConfig


class DualMLP(CTRModel):
    """Two MLPs over the same flat embedding (B, F*E), each ending in one logit, summed."""

    def __init__(self, layout: FieldLayout, config: DualMLPConfig) -> None:
        super().__init__()
        self.config = config
        flat_dim = config.embedding_dim * layout.num_fields
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        self.mlp1 = MLP.from_config(flat_dim, config.mlp1, output_dim=1)
        self.mlp2 = MLP.from_config(flat_dim, config.mlp2, output_dim=1)
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        return self.mlp1(flat) + self.mlp2(flat)  # (B, 1)
