"""DeepFM: ``logit = b + sum_f w(x_f) + sum_{i<j} <e_i, e_j> + MLP(e)``.

Guo, Tang, Ye, Li, He. "DeepFM: A Factorization-Machine based Neural Network for CTR
Prediction", IJCAI 2017. The FM part and the DNN share the field embeddings ``e`` (the paper's
point: no pre-training, no hand-made crosses); the first-order weights are tables of their own
with a bias starting at 0, as in the reference (FuxiCTR ``model_zoo/DeepFM``), whose MLP output
layer adds a second bias.
"""

from __future__ import annotations

import torch

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import (
    MLP,
    FeatureEmbedding,
    LinearTerm,
    pairwise_interactions,
    reset_linear_layers,
)
from finalmlp.schema import DeepFMConfig


class DeepFM(CTRModel):
    """FM (first + second order) plus an MLP over the same embeddings (B, F, E).

    Example:
        >>> model = DeepFM(layout, DeepFMConfig())
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: DeepFMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        self.linear = LinearTerm(layout)
        flat_dim = config.embedding_dim * layout.num_fields
        self.mlp = MLP.from_config(flat_dim, config.mlp, output_dim=1)
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        embeddings = self.embedding(batch)  # (B, F, E)
        fm = self.linear(batch) + pairwise_interactions(embeddings)  # (B,)
        return fm.unsqueeze(-1) + self.mlp(embeddings.flatten(start_dim=1))  # (B, 1)
