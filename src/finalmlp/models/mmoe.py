"""MMoE: experts shared by every task, one softmax gate per task.

Ma, Zhao, Yi, Chen, Hong, Chi. "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts", KDD 2018. Eq. 4-5: ``y_t = h_t(sum_i g_t(x)_i f_i(x))`` with
``g_t(x) = softmax(W_t x)``. The experts are MLPs over the flat field embedding, the towers
MLPs ending in one logit (as FuxiCTR's ``model_zoo/multitask/MMoE``); the gate is the paper's
linear map unless ``gate_hidden_units`` gives it hidden layers (FuxiCTR's default).
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
from finalmlp.schema import MMoEConfig


class MMoE(MixtureModel):
    """``logit_t = Tower_t(sum_i softmax(W_t e)_i Expert_i(e))``, e the flat embedding.

    Example:
        >>> model = MMoE(layout, MMoEConfig(num_experts=8), num_tasks=2)
        >>> logits = model(batch)  # (B, 2)
        >>> model.expert_stats(batch).gate_weights  # [task][expert], mean over rows
    """

    def __init__(self, layout: FieldLayout, config: MMoEConfig, num_tasks: int = 1) -> None:
        super().__init__()
        self.config = config
        self.num_tasks = num_tasks
        flat_dim = config.embedding_dim * layout.num_fields
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        self.experts = ExpertGroup(config.num_experts, flat_dim, config.expert)
        self.gates = nn.ModuleList(
            SoftmaxGate(flat_dim, config.num_experts, config.gate_hidden_units)
            for _ in range(num_tasks)
        )
        width = config.expert.hidden_units[-1]
        self.towers = nn.ModuleList(
            MLP.from_config(width, config.tower, output_dim=1) for _ in range(num_tasks)
        )
        self.expert_names = [f"expert.{i}" for i in range(config.num_experts)]
        reset_linear_layers(self)

    def run(self, batch: Batch, trace: ExpertTrace | None) -> torch.Tensor:
        flat = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        outputs = run_experts(self.experts, flat)  # (B, N, H)
        if trace is not None:
            trace.experts(self.expert_names, 1, outputs)
        logits = []
        for task, (gate, tower) in enumerate(zip(self.gates, self.towers, strict=True)):
            weights = gate(flat)  # (B, N)
            if trace is not None:
                trace.gate([task], self.expert_names, weights)
            logits.append(tower(mix(weights, outputs)))  # (B, 1)
        return torch.cat(logits, dim=1)  # (B, T)
