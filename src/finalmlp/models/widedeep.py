"""Wide & Deep: ``logit = sum_f w(x_f) + MLP(e)``.

Cheng et al. "Wide & Deep Learning for Recommender Systems", DLRS 2016. The paper's wide part
is a linear model over raw and cross-product features, trained with FTRL; as in the reference
(FuxiCTR ``model_zoo/WideDeep``) it is here a linear model over the fields themselves (add
crossed columns as features to get the paper's crosses), trained jointly with the deep part by
the one optimizer. The wide part has no bias of its own: the MLP's output layer carries it.
"""

from __future__ import annotations

import torch

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, FeatureEmbedding, LinearTerm, reset_linear_layers
from finalmlp.schema import WideDeepConfig


class WideDeep(CTRModel):
    """Wide: first-order weights (tables of their own). Deep: MLP over the flat embedding.

    Example:
        >>> model = WideDeep(layout, WideDeepConfig())
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: WideDeepConfig) -> None:
        super().__init__()
        self.config = config
        self.wide = LinearTerm(layout, bias=False)
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        flat_dim = config.embedding_dim * layout.num_fields
        self.deep = MLP.from_config(flat_dim, config.mlp, output_dim=1)
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        return self.wide(batch).unsqueeze(-1) + self.deep(flat)  # (B, 1)
