"""AutoInt+: multi-head self-attention over field embeddings, plus a DNN (and optional LR part).

Song, Shi, Xiao, Duan, Xu, Zhang, Tang. "AutoInt: Automatic Feature Interaction Learning via
Self-Attentive Neural Networks", CIKM 2019. AutoInt+ adds a DNN over the flat embeddings to
the attention network; the logits of the parts are summed. Where the paper leaves a choice
open this follows the reference implementation (FuxiCTR ``model_zoo/AutoInt``):

- ``attention_dim`` is the width of a layer's output, all heads together (head width
  ``attention_dim / num_heads``);
- optional scaling of the scores by ``1 / sqrt(head width)`` (the paper has none), optional
  LayerNorm after the residual sum, then ReLU (the paper's Eq. 8);
- the residual is the layer input itself when widths agree, else a bias-free projection;
- dropout acts on the attention weights; FuxiCTR uses one ``net_dropout`` for these and the
  DNN, here they are separate settings (``attention_dropout``, ``mlp.dropout``);
- the optional LR part (``use_wide``) has no bias; all projections start xavier-normal.
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import MLP, Dropout, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import AutoIntConfig


class MultiHeadSelfAttention(nn.Module):
    """One interacting layer (AutoInt, Sec. 4.3): every field attends to every field.

    Per head h with width D: ``a = softmax(Q_h K_h^T [/ sqrt(D)])`` over the fields,
    ``out_h = a V_h``; heads are concatenated, the residual added, then LayerNorm (optional)
    and ReLU. (B, F, input_dim) -> (B, F, attention_dim).
    """

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int = 1,
        dropout: float = 0.0,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_heads < 1 or attention_dim % num_heads:
            raise ConfigError(f"num_heads={num_heads} must divide attention_dim={attention_dim}")
        self.num_heads, self.head_dim = num_heads, attention_dim // num_heads
        self.scale = self.head_dim**-0.5 if use_scale else 1.0
        self.query = nn.Linear(input_dim, attention_dim, bias=False)
        self.key = nn.Linear(input_dim, attention_dim, bias=False)
        self.value = nn.Linear(input_dim, attention_dim, bias=False)
        self.use_residual = use_residual
        self.residual = (
            nn.Linear(input_dim, attention_dim, bias=False)
            if use_residual and input_dim != attention_dim
            else None
        )
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.norm = nn.LayerNorm(attention_dim) if layer_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = (self._heads(proj(x)) for proj in (self.query, self.key, self.value))
        scores = torch.matmul(query, key.transpose(-1, -2)) * self.scale  # (B, H, F, F)
        weights = scores.softmax(dim=-1)
        if self.dropout is not None:
            weights = self.dropout(weights)
        out = torch.matmul(weights, value).transpose(1, 2).flatten(start_dim=2)  # (B, F, H*D)
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        if self.norm is not None:
            out = self.norm(out)
        return out.relu()

    def _heads(self, projected: torch.Tensor) -> torch.Tensor:
        """(B, F, H*D) -> (B, H, F, D)."""
        return projected.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)


class AutoInt(CTRModel):
    """``logit = Linear(flat(Attn_L(...Attn_1(e)))) + DNN(flat e) [+ sum_f w_f(x_f)]``.

    ``config.mlp = None`` leaves the DNN out (plain AutoInt); ``config.use_wide`` adds the
    first-order part.

    Example:
        >>> model = AutoInt(layout, AutoIntConfig(attention_dim=32, num_heads=2))
        >>> logits = model(batch)  # (B, 1)
    """

    def __init__(self, layout: FieldLayout, config: AutoIntConfig) -> None:
        super().__init__()
        self.config = config
        dim, num_fields = config.embedding_dim, layout.num_fields
        self.embedding = FeatureEmbedding(layout, dim)
        self.attention = nn.Sequential(
            *(
                MultiHeadSelfAttention(
                    dim if i == 0 else config.attention_dim,
                    config.attention_dim,
                    config.num_heads,
                    config.attention_dropout,
                    config.use_residual,
                    config.use_scale,
                    config.layer_norm,
                )
                for i in range(config.num_layers)
            )
        )
        self.output = nn.Linear(num_fields * config.attention_dim, 1)
        self.dnn = None if config.mlp is None else MLP.from_config(dim * num_fields, config.mlp, 1)
        self.wide = FeatureEmbedding(layout, embedding_dim=1) if config.use_wide else None
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        embedded = self.embedding(batch)  # (B, F, E)
        attended = self.attention(embedded).flatten(start_dim=1)  # (B, F*attention_dim)
        logit = self.output(attended).squeeze(-1)  # (B,)
        if self.dnn is not None:
            logit = logit + self.dnn(embedded.flatten(start_dim=1)).squeeze(-1)
        if self.wide is not None:
            logit = logit + self.wide(batch).sum(dim=(1, 2))
        return logit.unsqueeze(-1)  # (B, 1)
