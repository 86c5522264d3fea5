"""FinalMLP: two gated MLP streams fused by multi-head bilinear aggregation.

Mao, Zhu, Su, Cai, Li, Dong. "FinalMLP: An Enhanced Two-Stream MLP Model for CTR Prediction",
AAAI 2023. Follows the reference implementation (FuxiCTR ``model_zoo/FinalMLP``) in structure
and initialisation.

Several tasks (ours; no library has it): the two gated streams are shared by every task and each
task gets its own interaction-aggregation head, so a task weighs the streams' products its own
way at the cost of one small bilinear form. With ``task_gates`` each task also gets its own pair
of gates: the stream weights stay shared, the streams run once per task on that task's gated
embeddings (T times the stream cost).
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.finalmlp_blocks import FeatureGate, InteractionAggregation
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import FinalMLPConfig


class FinalMLP(CTRModel):
    """``logit = Agg(MLP1(e * g1), MLP2(e * g2))``, e the flat field embedding (B, F*E).

    Example:
        >>> model = FinalMLP(layout, FinalMLPConfig(fs1_context=["user"], num_heads=5))
        >>> logits = model(batch)  # (B, 1)
    """

    multitask = True

    def __init__(self, layout: FieldLayout, config: FinalMLPConfig, num_tasks: int = 1) -> None:
        super().__init__()
        self.config = config
        self.num_tasks = num_tasks
        dim = config.embedding_dim
        flat_dim = self.flat_dim = dim * layout.num_fields
        self.embedding = FeatureEmbedding(layout, dim)
        self.mlp1 = MLP.from_config(flat_dim, config.mlp1)
        self.mlp2 = MLP.from_config(flat_dim, config.mlp2)
        self.gate1 = self.gate2 = None
        if config.use_fs:
            self.gate1 = FeatureGate(layout, dim, config.fs1_context, config.fs_hidden_units)
            self.gate2 = FeatureGate(layout, dim, config.fs2_context, config.fs_hidden_units)
        # One task keeps the attribute names of single-task runs (their weights load as before).
        self.aggregation = InteractionAggregation(
            self.mlp1.output_dim, self.mlp2.output_dim, config.num_heads
        )
        self.task_aggregations = nn.ModuleList(
            InteractionAggregation(self.mlp1.output_dim, self.mlp2.output_dim, config.num_heads)
            for _ in range(num_tasks - 1)
        )
        self.task_gates = nn.ModuleList()
        if config.use_fs and config.task_gates and num_tasks > 1:
            for _ in range(num_tasks - 1):
                self.task_gates.append(
                    nn.ModuleList(
                        FeatureGate(layout, dim, context, config.fs_hidden_units)
                        for context in (config.fs1_context, config.fs2_context)
                    )
                )
        reset_linear_layers(self)

    def forward(self, batch: Batch) -> torch.Tensor:
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        heads = [self.aggregation, *self.task_aggregations]
        if self.task_gates:
            return self._per_task_gates(batch, flat, heads)
        x1, x2 = flat, flat
        if self.gate1 is not None and self.gate2 is not None:
            x1 = flat * self.gate1(batch)  # gate (B or 1, F*E)
            x2 = flat * self.gate2(batch)
        o1, o2 = self.mlp1(x1), self.mlp2(x2)
        return torch.stack([head(o1, o2) for head in heads], dim=1)  # (B, T)

    def _per_task_gates(
        self, batch: Batch, flat: torch.Tensor, heads: list[nn.Module]
    ) -> torch.Tensor:
        """Each task's own gates; the shared streams run once on all tasks' rows stacked."""
        assert self.gate1 is not None and self.gate2 is not None
        pairs: list[tuple[nn.Module, nn.Module]] = [(self.gate1, self.gate2)]
        pairs += [(gates[0], gates[1]) for gates in self.task_gates]  # type: ignore[index]
        rows = flat.shape[0]
        x1 = torch.cat([(flat * g1(batch)).expand(rows, -1) for g1, _ in pairs])  # (T*B, F*E)
        x2 = torch.cat([(flat * g2(batch)).expand(rows, -1) for _, g2 in pairs])
        o1, o2 = self.mlp1(x1), self.mlp2(x2)
        logits = [
            head(o1[t * rows : (t + 1) * rows], o2[t * rows : (t + 1) * rows])
            for t, head in enumerate(heads)
        ]
        return torch.stack(logits, dim=1)  # (B, T)

    def gates(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The two streams' gate values for a batch, each (B or 1, F*E); ones without gating."""
        if self.gate1 is None or self.gate2 is None:
            ones = torch.ones(1, self.flat_dim)
            return ones, ones
        return self.gate1(batch), self.gate2(batch)
