"""FM: factorization machine, ``logit = b + sum_f w(x_f) + sum_{i<j} <e_i, e_j>``.

Rendle. "Factorization Machines", ICDM 2010. As in the reference (FuxiCTR ``model_zoo/FM``),
the first-order weights are embedding tables of dim 1 of their own, not tied to the factors
``e``, and the bias starts at 0.
"""

from __future__ import annotations

import torch

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import FeatureEmbedding, LinearTerm, pairwise_interactions
from finalmlp.schema import FMConfig


class FactorizationMachine(CTRModel):
    """First-order term plus the pairwise inner products of the field embeddings (B, F, E).

    Example:
        >>> model = FactorizationMachine(layout, FMConfig(embedding_dim=10))
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: FMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        self.linear = LinearTerm(layout)

    def forward(self, batch: Batch) -> torch.Tensor:
        logit = self.linear(batch) + pairwise_interactions(self.embedding(batch))  # (B,)
        return logit.unsqueeze(-1)  # (B, 1)
