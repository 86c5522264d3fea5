"""DNN: an MLP over the concatenated field embeddings, ``logit = MLP(e)``.

The plain deep baseline of the BARS benchmark; follows the reference (FuxiCTR
``model_zoo/DNN``): Linear -> BatchNorm -> ReLU -> Dropout per hidden layer, then Linear to 1.
"""

from __future__ import annotations

import torch

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import DNNConfig


class DNN(CTRModel):
    """One MLP over the flat embedding (B, F*E), ending in one logit.

    Example:
        >>> model = DNN(layout, DNNConfig(mlp=MLPConfig(hidden_units=[400, 400, 400])))
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: DNNConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        flat_dim = config.embedding_dim * layout.num_fields
        self.mlp = MLP.from_config(flat_dim, config.mlp, output_dim=1)
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        return self.mlp(flat)  # (B, 1)
