"""FinalNet: factorized interaction layers (FINAL) in one or two blocks, self-distilled.

Zhu, Jia, Mao, Tang, Su, Zhang. "FINAL: Factorized Interaction Layer for CTR Prediction",
SIGIR 2023. Where the paper leaves a choice open this follows the reference implementation
(FuxiCTR ``model_zoo/FinalNet``, the code BARS ran as ``model_zoo/FINAL`` in FuxiCTR 2.0.2):

- a FINAL layer is one Linear whose output is split in halves ``a`` (first) and ``b``:
  ``concat`` gives ``[a, b * a]`` (as many parameters as a Linear to the same width, which must
  be even), ``sum`` gives ``a + b * a`` (the Linear is twice as wide); each layer is followed by
  BatchNorm (optional), ReLU and Dropout, like an MLP layer;
- the optional feature gating (block 1 only) is a Linear across the fields, started at zero
  weights and unit biases (every gate 1), its output concatenated with the plain embeddings;
- 2B averages the two blocks' *logits* (FuxiCTR: ``sigmoid(0.5 * (y1 + y2))``) and trains each
  block also towards the ensemble's detached probability (see :meth:`FinalNet.auxiliary_loss`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from finalmlp.batch import Batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import Dropout, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import FinalNetConfig, MLPConfig


class FactorizedInteraction(nn.Module):
    """A FINAL layer: a Linear layer made multiplicative. (B, input_dim) -> (B, output_dim).

    ``[a, b] = W x + c``; ``concat``: ``[a, b * a]`` (a, b of width output_dim / 2); ``sum``:
    ``a + b * a`` (a, b of width output_dim). Stacked, the products raise the interaction order
    with each layer while ``a`` keeps the lower orders.
    """

    def __init__(self, input_dim: int, output_dim: int, residual_type: str = "concat") -> None:
        super().__init__()
        if residual_type not in ("concat", "sum"):
            raise ConfigError(f"residual_type must be 'concat' or 'sum', got {residual_type!r}")
        if residual_type == "concat" and output_dim % 2:
            raise ConfigError(f"residual_type 'concat' needs an even width, got {output_dim}")
        self.residual_type = residual_type
        self.linear = nn.Linear(input_dim, output_dim * (2 if residual_type == "sum" else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear, factor = self.linear(x).chunk(2, dim=-1)
        if self.residual_type == "concat":
            return torch.cat([linear, factor * linear], dim=-1)
        return linear + factor * linear


class FinalBlock(nn.Module):
    """Per layer FINAL -> BatchNorm (optional) -> ReLU -> Dropout: an MLP with FINAL layers.

    (B, input_dim) -> (B, hidden_units[-1]).
    """

    def __init__(self, input_dim: int, config: MLPConfig, residual_type: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for units in config.hidden_units:
            layers.append(FactorizedInteraction(width, units, residual_type))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(nn.ReLU())
            if config.dropout > 0:
                layers.append(Dropout(config.dropout))
            width = units
        self.output_dim = width
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FieldGate(nn.Module):
    """FinalNet's feature gating: ``g = W e + b`` mixes the fields (W is F x F, per embedding
    dimension alike); returns ``[e, e * g]`` stacked on the field axis. (B, F, E) -> (B, 2F, E).
    Starts at W = 0, b = 1, i.e. every gate 1."""

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_fields, num_fields)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.linear.weight)
        nn.init.ones_(self.linear.bias)

    def forward(self, embedded: torch.Tensor) -> torch.Tensor:
        gates = self.linear(embedded.transpose(1, 2)).transpose(1, 2)  # (B, F, E)
        return torch.cat([embedded, embedded * gates], dim=1)


class FinalNet(CTRModel):
    """1B: ``logit = w1 . Block1(gate(e))``; 2B: the mean of that and ``w2 . Block2(e)``.

    In training mode a 2B forward keeps the two block logits on the model for
    :meth:`auxiliary_loss`; eval (and exported) forwards only return the ensemble logit.

    Example:
        >>> model = FinalNet(layout, FinalNetConfig(block_type="2B"))
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: FinalNetConfig) -> None:
        super().__init__()
        self.config = config
        flat_dim = config.embedding_dim * layout.num_fields
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        self.gate = FieldGate(layout.num_fields) if config.use_feature_gating else None
        gated_dim = flat_dim * (2 if self.gate is not None else 1)
        self.block1 = FinalBlock(gated_dim, config.block1, config.residual_type)
        self.output1 = nn.Linear(self.block1.output_dim, 1)
        self.block2 = self.output2 = None
        if config.block_type == "2B":
            self.block2 = FinalBlock(flat_dim, config.block2, config.residual_type)
            self.output2 = nn.Linear(self.block2.output_dim, 1)
        reset_linear_layers(self)
        if self.gate is not None:
            self.gate.reset_parameters()  # after the generic init, as the reference does
        self.block_logits: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, batch: Batch) -> torch.Tensor:
        embedded = self.embedding(batch)  # (B, F, E)
        gated = embedded if self.gate is None else self.gate(embedded)  # (B, F or 2F, E)
        logit1 = self.output1(self.block1(gated.flatten(start_dim=1)))  # (B, 1)
        if self.block2 is None or self.output2 is None:
            return logit1
        logit2 = self.output2(self.block2(embedded.flatten(start_dim=1)))  # (B, 1)
        if self.training:
            self.block_logits = (logit1, logit2)
        return 0.5 * (logit1 + logit2)

    def auxiliary_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor | None:
        """2B self-distillation: ``BCE(s(l1), t) + BCE(s(l2), t)``, ``t = s(logits)`` detached.

        ``logits`` is the ensemble logit ``(l1 + l2) / 2`` the trainer's BCE with ``label``
        already covers; the block logits come from the last training-mode forward (then
        dropped). The targets are soft (the ensemble's probability), not ``label``, and carry no
        gradient, as in FuxiCTR; BCE-with-logits has the same gradient as its BCE on sigmoid
        outputs, without the log clamping. None for 1B or when no training forward preceded.
        """
        if self.block_logits is None:
            return None
        logit1, logit2 = self.block_logits
        self.block_logits = None
        target = torch.sigmoid(logits.detach())
        bce = functional.binary_cross_entropy_with_logits
        return bce(logit1, target) + bce(logit2, target)
