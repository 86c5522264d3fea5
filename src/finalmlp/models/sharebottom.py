"""ShareBottom: one bottom MLP shared by every task, one tower per task.

Caruana, "Multitask Learning", Machine Learning 28 (1997): hard parameter sharing, the
baseline of the MMoE and PLE papers. Follows FuxiCTR's ``model_zoo/multitask/ShareBottom``:
the bottom is an MLP over the flat field embedding, each tower an MLP ending in one logit.
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import ShareBottomConfig


class ShareBottom(CTRModel):
    """``logit_t = Tower_t(Bottom(e))``, e the flat field embedding (B, F*E).

    Example:
        >>> model = ShareBottom(layout, ShareBottomConfig(), num_tasks=2)
        >>> logits = model(batch)  # (B, 2)
    """

    multitask = True

    def __init__(self, layout: FieldLayout, config: ShareBottomConfig, num_tasks: int = 1) -> None:
        super().__init__()
        self.config = config
        self.num_tasks = num_tasks
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        self.bottom = MLP.from_config(config.embedding_dim * layout.num_fields, config.bottom)
        self.towers = nn.ModuleList(
            MLP.from_config(self.bottom.output_dim, config.tower, output_dim=1)
            for _ in range(num_tasks)
        )
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        shared = self.bottom(self.embedding(batch).flatten(start_dim=1))  # (B, H)
        return torch.cat([tower(shared) for tower in self.towers], dim=1)  # (B, T)
