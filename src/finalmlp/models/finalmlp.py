"""FinalMLP: two gated MLP streams fused by multi-head bilinear aggregation.

Mao, Zhu, Su, Cai, Li, Dong. "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction",
AAAI 2023. Follows the reference implementation (FuxiCTR ``model_zoo/FinalMLP``) in structure
and initialisation.
"""

from __future__ import annotations

import torch

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import (
    MLP,
    FeatureEmbedding,
    FeatureGate,
    InteractionAggregation,
    reset_linear_layers,
)
from finalmlp.schema import FinalMLPConfig


class FinalMLP(CTRModel):
    """``logit = Agg(MLP1(e * g1), MLP2(e * g2))``, e the flat field embedding (B, F*E).

    Example:
        >>> model = FinalMLP(layout, FinalMLPConfig(fs1_context=["user"], num_heads=5))
        >>> logits = model(batch)  # (B,)
    """

    def __init__(self, layout: FieldLayout, config: FinalMLPConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        flat_dim = self.flat_dim = dim * layout.num_fields
        self.embedding = FeatureEmbedding(layout, dim)
        self.mlp1 = MLP.from_config(flat_dim, config.mlp1)
        self.mlp2 = MLP.from_config(flat_dim, config.mlp2)
        self.gate1 = self.gate2 = None
        if config.use_fs:
            self.gate1 = FeatureGate(layout, dim, config.fs1_context, config.fs_hidden_units)
            self.gate2 = FeatureGate(layout, dim, config.fs2_context, config.fs_hidden_units)
        self.aggregation = InteractionAggregation(
            self.mlp1.output_dim, self.mlp2.output_dim, config.num_heads
        )
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        x1, x2 = flat, flat
        if self.gate1 is not None and self.gate2 is not None:
            x1 = flat * self.gate1(batch)  # gate (B or 1, F*E)
            x2 = flat * self.gate2(batch)
        return self.aggregation(self.mlp1(x1), self.mlp2(x2))  # (B,)

    def gates(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The two streams' gate values for a batch, each (B or 1, F*E); ones without gating."""
        if self.gate1 is None or self.gate2 is None:
            ones = torch.ones(1, self.flat_dim)
            return ones, ones
        return self.gate1(batch), self.gate2(batch)
