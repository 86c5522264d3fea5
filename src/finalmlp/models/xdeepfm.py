"""xDeepFM: a compressed interaction network (CIN), a DNN and a linear part, logits summed.

Lian, Zhou, Zhang, Chen, Xie, Sun. "xDeepFM: Combining Explicit and Implicit Feature
Interactions for Recommender Systems", KDD 2018. Where the paper leaves a choice open this
follows the reference implementation (FuxiCTR ``model_zoo/xDeepFM``,
``layers/interactions/compressed_interaction_net.py``):

- every CIN layer's feature maps are both sum-pooled into the output and fed to the next layer
  (no ``split_half``, the paper's original form; DeepCTR-style ports halve them);
- CIN layers have no activation (the identity, as in the paper's Eq. 6) and a bias per map;
- the linear part has no bias of its own: the CIN and DNN output layers carry the biases;
- 1x1 convolutions and Linear layers start xavier-normal with zero biases (FuxiCTR 2.x
  re-initialises ``nn.Conv1d`` too; the 1.x code BARS ran left convolutions at PyTorch's
  default init).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import XDeepFMConfig


class CompressedInteractionNetwork(nn.Module):
    """CIN (xDeepFM, Sec. 3.2): explicit vector-wise interactions of bounded degree.

    Layer k turns the previous feature maps X^{k-1} (B, H_{k-1}, E) into H_k maps::

        X^k_h = sum_{i<F} sum_{j<H_{k-1}} W^{k,h}_{i,j} * (X^0_i o X^{k-1}_j)    (o: elementwise)

    i.e. all F x H_{k-1} outer (Hadamard) products of the field embeddings X^0 with the
    previous maps, compressed by a 1x1 convolution. Each layer's maps are summed over the
    embedding axis; the pooled vectors of all layers are concatenated and mapped to one logit.
    (B, F, E) -> (B,).
    """

    def __init__(self, num_fields: int, hidden_units: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        width = num_fields
        for units in hidden_units:
            # Channel f * H_{k-1} + j holds X^0_f o X^{k-1}_j (the order of the reference).
            self.layers.append(nn.Conv1d(num_fields * width, units, kernel_size=1))
            width = units
        self.output = nn.Linear(sum(hidden_units), 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.layers:
            assert isinstance(conv, nn.Conv1d) and conv.bias is not None
            nn.init.xavier_normal_(conv.weight)
            nn.init.zeros_(conv.bias)
        reset_linear_layers(self.output)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        maps, pooled = x0, []
        for conv in self.layers:
            products = (x0.unsqueeze(2) * maps.unsqueeze(1)).flatten(1, 2)  # (B, F*H, E)
            maps = conv(products)  # (B, H', E)
            pooled.append(maps.sum(dim=-1))  # (B, H')
        return self.output(torch.cat(pooled, dim=1)).squeeze(-1)  # (B,)


class XDeepFM(CTRModel):
    """``logit = sum_f w_f(x_f) + CIN(e) + DNN(flat e)``, e the field embeddings (B, F, E).

    ``config.mlp = None`` leaves the DNN out (linear part + CIN, BARS' "CIN" model).

    Example:
        >>> model = XDeepFM(layout, XDeepFMConfig(cin_hidden_units=[16, 16]))
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: XDeepFMConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.embedding = FeatureEmbedding(layout, dim)
        self.linear = FeatureEmbedding(layout, embedding_dim=1)  # first-order weights
        self.cin = CompressedInteractionNetwork(layout.num_fields, config.cin_hidden_units)
        self.dnn = (
            None
            if config.mlp is None
            else MLP.from_config(dim * layout.num_fields, config.mlp, output_dim=1)
        )
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        embedded = self.embedding(batch)  # (B, F, E)
        logit = self.linear(batch).sum(dim=(1, 2)) + self.cin(embedded)  # (B,)
        if self.dnn is not None:
            logit = logit + self.dnn(embedded.flatten(start_dim=1)).squeeze(-1)
        return logit.unsqueeze(-1)  # (B, 1)
