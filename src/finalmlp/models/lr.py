"""Logistic regression: ``logit = b + sum_f w_f(x_f)``, the baseline every CTR model must beat."""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import FeatureEmbedding
from finalmlp.schema import LRConfig


class LogisticRegression(CTRModel):
    """One weight per categorical value, per numeric field and per sequence item (mean-pooled)."""

    def __init__(self, layout: FieldLayout, config: LRConfig) -> None:
        super().__init__()
        self.config = config
        self.weights = FeatureEmbedding(layout, embedding_dim=1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> torch.Tensor:
        return (self.weights(batch).sum(dim=(1, 2)) + self.bias).unsqueeze(-1)  # (B, 1)
