"""FinalMLP built on FuxiCTR 2.3.10's own parts (FeatureEmbedding, MLP_Block, BaseModel),
following FuxiCTR's public model-zoo definition (``model_zoo/FinalMLP/src/FinalMLP.py``)
operation for operation: per-row gates (a context-free gate repeats its learned vector over
the batch, as there), the bilinear fusion as two batched matmuls, a sigmoid output and
FuxiCTR's BCE loss. The wheel ships the parts but not the model zoo.

Used by fuxictr_peer.py (CPU, with FuxiCTR's data pipeline) and bench_gpu.py (GPU); imports
neither Ray nor FuxiCTR's preprocessing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from fuxictr.features import FeatureMap
from fuxictr.pytorch.layers import FeatureEmbedding, MLP_Block
from fuxictr.pytorch.models import BaseModel
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vs_fuxictr_common import BenchSpec

Inputs = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- model
class StreamGate(nn.Module):
    """One stream's feature gate: ``flat * 2 * sigmoid(MLP(context))``, per row.

    The context is the flat embedding of the gate's own context fields (own tables), or a
    learned zero-initialised vector of size E repeated over the batch when there are none.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        embedding_dim: int,
        flat_dim: int,
        hidden_units: list[int],
        context: list[str],
    ) -> None:
        super().__init__()
        self.context_bias: nn.Parameter | None = None
        self.context_embedding: FeatureEmbedding | None = None
        if context:
            self.context_embedding = FeatureEmbedding(
                feature_map, embedding_dim, required_feature_columns=context
            )
        else:
            self.context_bias = nn.Parameter(torch.zeros(1, embedding_dim))
        self.mlp = MLP_Block(
            input_dim=embedding_dim * max(1, len(context)),
            output_dim=flat_dim,
            hidden_units=hidden_units,
            hidden_activations="ReLU",
            output_activation="Sigmoid",
            batch_norm=False,
        )

    def forward(self, inputs: Inputs, flat: torch.Tensor) -> torch.Tensor:
        if self.context_bias is not None:
            context = self.context_bias.repeat(flat.size(0), 1)  # (B, E)
        else:
            assert self.context_embedding is not None
            context = self.context_embedding(inputs).flatten(start_dim=1)  # (B, F_ctx*E)
        return flat * (2 * self.mlp(context))  # (B, F*E)


class MultiHeadBilinearFusion(nn.Module):
    """``w1.o1 + w2.o2 + sum_h o1_h^T W_h o2_h`` (+ biases): (B, d1), (B, d2) -> (B, 1)."""

    def __init__(self, dim1: int, dim2: int, num_heads: int) -> None:
        super().__init__()
        if dim1 % num_heads or dim2 % num_heads:
            raise SystemExit(f"num_heads={num_heads} must divide {dim1} and {dim2}")
        self.num_heads, self.head1, self.head2 = num_heads, dim1 // num_heads, dim2 // num_heads
        self.linear1 = nn.Linear(dim1, 1)
        self.linear2 = nn.Linear(dim2, 1)
        self.bilinear = nn.Parameter(torch.empty(num_heads * self.head1 * self.head2, 1))
        nn.init.xavier_normal_(self.bilinear)

    def forward(self, o1: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        heads1 = o1.view(-1, self.num_heads, 1, self.head1)  # (B, H, 1, d1/H)
        heads2 = o2.view(-1, self.num_heads, self.head2, 1)  # (B, H, d2/H, 1)
        weight = self.bilinear.view(self.num_heads, self.head1, self.head2)
        pairs = torch.matmul(torch.matmul(heads1, weight), heads2)  # (B, H, 1, 1)
        return self.linear1(o1) + self.linear2(o2) + pairs.sum(dim=1).view(-1, 1)


class FinalMLP(BaseModel):
    """FinalMLP on FuxiCTR's BaseModel: Adam, BCE on sigmoid outputs, embedding L2."""

    def __init__(
        self, feature_map: FeatureMap, spec: BenchSpec, model_root: str, gpu: int = -1
    ) -> None:
        super().__init__(
            feature_map,
            model_id="FinalMLP",
            gpu=gpu,
            embedding_regularizer=spec.embedding_l2,
            net_regularizer=0,
            verbose=0,
            model_root=model_root,
            metrics=["AUC", "logloss"],
        )
        dim = spec.embedding_dim
        flat_dim = dim * feature_map.num_fields
        self.embedding_layer = FeatureEmbedding(feature_map, dim)
        self.mlp1 = self._stream(flat_dim, list(spec.mlp1), spec.mlp1_dropout, spec.batch_norm)
        self.mlp2 = self._stream(flat_dim, list(spec.mlp2), spec.mlp2_dropout, spec.batch_norm)
        hidden = list(spec.fs_hidden)
        self.gate1 = StreamGate(feature_map, dim, flat_dim, hidden, list(spec.fs1_context))
        self.gate2 = StreamGate(feature_map, dim, flat_dim, hidden, list(spec.fs2_context))
        self.fusion = MultiHeadBilinearFusion(spec.mlp1[-1], spec.mlp2[-1], spec.num_heads)
        self.compile("adam", "binary_crossentropy", spec.learning_rate)
        self.reset_parameters()
        self.model_to_device()

    @staticmethod
    def _stream(flat_dim: int, units: list[int], dropout: float, batch_norm: bool) -> MLP_Block:
        return MLP_Block(
            input_dim=flat_dim,
            output_dim=None,
            hidden_units=units,
            hidden_activations="ReLU",
            output_activation=None,
            dropout_rates=dropout,
            batch_norm=batch_norm,
        )

    def forward(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        features = self.get_inputs(inputs)
        flat = self.embedding_layer(features).flatten(start_dim=1)  # (B, F*E)
        logit = self.fusion(
            self.mlp1(self.gate1(features, flat)), self.mlp2(self.gate2(features, flat))
        )
        return {"y_pred": self.output_activation(logit)}  # (B, 1)


# ----------------------------------------------------------------------------- stages
