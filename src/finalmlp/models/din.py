"""DIN: Deep Interest Network (Zhou et al., "Deep Interest Network for Click-Through Rate
Prediction", KDD 2018, arXiv 1706.06978).

``logit = MLP([e_1, ..., e_F, v_U(A)])``: the user's behaviours are pooled by target attention
(``v_U(A) = sum_j a(e_j, v_A) e_j``, Eq. 3: finalmlp.models.attention), concatenated with the
other field embeddings and fed to an MLP with Dice (Eq. 5), as in the paper's Fig. 2.

Where this follows FuxiCTR's ``model_zoo/DIN`` (v2.3): the local activation unit over
``[q, k, q - k, q * k]`` with hidden units [64] and Dice, no softmax by default, padding
masked; the MLP widths [512, 128, 64]; xavier-normal Linear weights and zero biases.

Where it differs:
- each attention-pooled sequence field has its own unit and its own target (``target:`` in
  the data config); FuxiCTR can attend a tuple of fields (item and category histories) with
  one unit over their concatenated embeddings, one weight per position for both;
- Dice takes its batch statistics over real items only (FuxiCTR's counts padded positions);
- the MLP's activation is Dice by default (the paper's; FuxiCTR's default is ReLU);
- mini-batch aware regularisation (Sec. 4.2, Eq. 4), which FuxiCTR does not have, is here:
  with ``mba_l2 = lambda`` each training batch adds
  ``lambda / 2 * sum_{j in batch} ||w_j||^2 / (B * p_j)``, where ``p_j`` is the number of
  occurrences of id ``j`` per row over the training batches seen so far (exact after one
  epoch). An id that occurs once per epoch is penalised as much as by a full-table L2 of the
  same lambda over that epoch; frequent ids much less, as the paper intends. The model knows
  no files, so the frequencies are counted from the batches rather than read up front.
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models.attention import Dice
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import Dropout, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import DINConfig


class DiceMLP(nn.Module):
    """Per hidden layer Linear -> BatchNorm (optional) -> Dice | PReLU | ReLU -> Dropout, then
    a Linear to one logit. (B, input_dim) -> (B, 1)."""

    def __init__(self, input_dim: int, config: DINConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for units in config.mlp.hidden_units:
            layers.append(nn.Linear(width, units))
            if config.mlp.batch_norm:
                layers.append(nn.BatchNorm1d(units))
            activations = {"dice": Dice, "prelu": nn.PReLU}
            layers.append(
                activations[config.activation](units)
                if config.activation in activations
                else nn.ReLU()
            )
            if config.mlp.dropout > 0:
                layers.append(Dropout(config.mlp.dropout))
            width = units
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DIN(CTRModel):
    """Attention-pooled histories and the other fields, flattened, into a Dice MLP.

    Example:
        >>> model = DIN(layout, DINConfig(embedding_dim=16))  # layout with attention pooling
        >>> logits = model(batch)  # (B, 1)

    Raises:
        ConfigError: no sequence field pools by attention (DIN would be a DNN).
    """

    frequency: torch.Tensor
    rows_seen: torch.Tensor

    def __init__(self, layout: FieldLayout, config: DINConfig) -> None:
        super().__init__()
        kinds = [layout.pooling(i).kind for i in range(len(layout.sequence_fields))]
        if "attention" not in kinds:
            raise ConfigError(
                "model din needs a behaviour sequence pooled by attention: give a sequence "
                "feature pooling: attention and target: <the candidate item feature>"
            )
        self.config = config
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        self.mlp = DiceMLP(config.embedding_dim * layout.num_fields, config)
        rows = self.embedding.table.num_embeddings
        # occurrences per embedding row over the training batches (mba_l2); not saved
        self.register_buffer("frequency", torch.zeros(rows, dtype=torch.float64), False)
        self.register_buffer("rows_seen", torch.zeros((), dtype=torch.float64), False)
        self._batch_rows: torch.Tensor | None = None
        self._batch_size = 0
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        if self.training and self.config.mba_l2 > 0:
            self._batch_rows = self.embedding.lookup_rows(batch)
            self._batch_size = batch.size
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        return self.mlp(flat)  # (B, 1)

    def auxiliary_loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor | None:
        """Mini-batch aware L2 on the rows the last training batch used (None without it)."""
        if self._batch_rows is None:
            return None
        rows, counts = torch.unique(self._batch_rows, return_counts=True)
        self._batch_rows = None
        with torch.no_grad():
            self.frequency.index_add_(0, rows, counts.to(self.frequency.dtype))
            self.rows_seen += self._batch_size
            per_row = (self.frequency[rows] / self.rows_seen).to(logits.dtype)  # p_j
        squares = self.embedding.table.weight[rows].pow(2).sum(dim=1)
        return 0.5 * self.config.mba_l2 * (squares / (per_row * self._batch_size)).sum()
