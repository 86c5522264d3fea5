"""PLE: Progressive Layered Extraction, stacked CGC layers of task-specific and shared experts.

Tang, Liu, Zhao, Gong. "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
Model for Personalized Recommendations", RecSys 2020. Follows Sec. 4 of the paper:

- a CGC layer has ``num_task_experts`` experts per task and ``num_shared_experts`` shared
  ones; task k's gate mixes task k's experts and the shared ones,
  ``g_k(x) = softmax(W_k x) [E_k,1(x) .. E_k,m(x), E_s,1(x) .. E_s,m(x)]`` (Eq. 4-5);
- PLE stacks ``num_levels`` of them (Eq. 6-7): at level j, task k's experts and gate take task
  k's output of level j-1, the shared experts take the shared output, and below the last level
  a shared gate mixes *all* the level's experts into the shared output (FuxiCTR's PLE mixes
  only the shared experts there; we follow the paper). The last level has no shared gate:
  its output would feed nothing;
- a tower per task on its last-level output.

Experts are MLPs (the configured widths at every level), towers MLPs ending in one logit.
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.layout import FieldLayout
from finalmlp.models.experts import (
    ExpertGroup,
    ExpertTrace,
    MixtureModel,
    SoftmaxGate,
    mix,
    run_experts,
)
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import PLEConfig


class CGCLayer(nn.Module):
    """One extraction level: T groups of task experts, shared experts, T task gates and (below
    the last level) a shared gate. ``forward(inputs)`` takes T+1 inputs (B, D): one per task,
    then the shared one; returns T+1 outputs (B, H) (the shared one only with a shared gate).
    """

    def __init__(
        self, input_dim: int, config: PLEConfig, num_tasks: int, level: int, shared_gate: bool
    ) -> None:
        super().__init__()
        per_task, shared = config.num_task_experts, config.num_shared_experts
        self.task_experts = nn.ModuleList(
            ExpertGroup(per_task, input_dim, config.expert) for _ in range(num_tasks)
        )
        self.shared_experts = ExpertGroup(shared, input_dim, config.expert)
        hidden = config.gate_hidden_units
        self.task_gates = nn.ModuleList(
            SoftmaxGate(input_dim, per_task + shared, hidden) for _ in range(num_tasks)
        )
        self.shared_gate = (
            SoftmaxGate(input_dim, num_tasks * per_task + shared, hidden) if shared_gate else None
        )
        self.task_names = [
            [f"L{level}.task{t}.{i}" for i in range(per_task)] for t in range(num_tasks)
        ]
        self.shared_names = [f"L{level}.shared.{i}" for i in range(shared)]
        self.level = level
        self.output_dim = config.expert.hidden_units[-1]

    def forward(
        self, inputs: list[torch.Tensor], trace: ExpertTrace | None = None
    ) -> list[torch.Tensor]:
        shared_out = run_experts(self.shared_experts, inputs[-1])  # (B, S, H)
        pairs = zip(self.task_experts, inputs, strict=False)  # inputs: T tasks, then shared
        task_outs = [run_experts(experts, x) for experts, x in pairs]
        if trace is not None:
            trace.experts(self.shared_names, self.level, shared_out)
            for names, out in zip(self.task_names, task_outs, strict=True):
                trace.experts(names, self.level, out)
        outputs = []
        for task, (gate, own) in enumerate(zip(self.task_gates, task_outs, strict=True)):
            weights = gate(inputs[task])  # (B, K + S)
            if trace is not None:
                trace.gate([task], self.task_names[task] + self.shared_names, weights)
            outputs.append(mix(weights, torch.cat([own, shared_out], dim=1)))
        if self.shared_gate is not None:
            every = torch.cat([*task_outs, shared_out], dim=1)  # (B, T*K + S, H)
            outputs.append(mix(self.shared_gate(inputs[-1]), every))
        return outputs


class PLE(MixtureModel):
    """``num_levels`` CGC layers over the flat field embedding, then a tower per task.

    Example:
        >>> model = PLE(layout, PLEConfig(num_levels=2), num_tasks=2)
        >>> logits = model(batch)  # (B, 2)
    """

    def __init__(self, layout: FieldLayout, config: PLEConfig, num_tasks: int = 1) -> None:
        super().__init__()
        self.config = config
        self.num_tasks = num_tasks
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        width = config.embedding_dim * layout.num_fields
        self.levels = nn.ModuleList()
        for level in range(1, config.num_levels + 1):
            last = level == config.num_levels
            self.levels.append(CGCLayer(width, config, num_tasks, level, shared_gate=not last))
            width = config.expert.hidden_units[-1]
        self.towers = nn.ModuleList(
            MLP.from_config(width, config.tower, output_dim=1) for _ in range(num_tasks)
        )
        reset_linear_layers(self)

    def run(self, batch: Batch, trace: ExpertTrace | None) -> torch.Tensor:
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        inputs = [flat] * (self.num_tasks + 1)
        for level in self.levels:
            inputs = level(inputs, trace)
        logits = [tower(x) for tower, x in zip(self.towers, inputs, strict=False)]  # T towers
        return torch.cat(logits, dim=1)  # (B, T)
