"""HoME: a hierarchy of multi-gate experts with normalised Swish experts and extra gates.

Wang, Cao, Fu, Gai, Zhou. "HoME: Hierarchy of Multi-Gate Experts for Multi-Task Learning at
Kuaishou", arXiv 2408.05430 (KDD 2025). The paper names three faults of MMoE-style models and
a fix for each; this module builds all three on the flat field embedding ``v`` (B, F*E).

What follows the paper (Sec. 4):

1. Expert normalisation & Swish, against expert collapse (experts with very different output
   scales, some > 90% zero ReLU activations): an expert is
   ``Swish(BatchNorm(Linear(x)))`` per layer instead of ``ReLU(Linear(x))``, so every expert's
   output is standardised before the gates weigh it and Swish leaves no dead units.
2. Hierarchy mask, against expert degradation (shared experts taken over by one task): tasks
   are grouped into meta-tasks (``task_groups``). Level 1 (the meta level) has globally shared
   experts and experts per group, all on ``v``. Group g's meta representation ``m_g`` is a
   softmax gate on ``v`` over the shared and group-g experts; the shared one ``m_s`` a
   softmax gate over all level-1 experts. Level 2 (the task level) has shared experts on
   ``m_s``, group-g experts on ``m_g`` and task-t experts on ``m_g(t)``; task t's gate, on
   ``m_g(t)``, mixes the shared, its group's and its own experts, and a tower gives its logit.
   A task's gates never see another group's or another task's experts.
3. Feature-gate and self-gate, against expert underfitting (sparse tasks ignoring their own
   experts):
   - feature-gate: each level-1 expert k sees ``v * 2 * sigmoid(v B_k A_k)``, a low-rank
     (LoRA-like, rank ``feature_gate_rank``) gate of its own: experts get different views of
     the input, as FinalMLP's stream gates do;
   - self-gate: a gated residual from a gate's own experts, ``out = sum softmax(W x) E(x) +
     sum SelfGate(x) E_own(x)``, with ``SelfGate = sigmoid(W' x)`` for one own expert and
     ``softmax(W' x)`` for several. So a task's (group's) own experts reach the level above
     whatever weight the shared experts win in the softmax gate.

Where the paper leaves a choice open, what we chose:

- Normalisation: BatchNorm, on every layer of an expert (not only its output layer); the
  output is ``Swish(BN(.))``. ``expert.batch_norm: false`` and ``expert_activation: relu``
  turn each off (the paper's ablations). Towers and gates keep ReLU (only experts change).
- Widths: both levels use ``expert`` (level 2 on the level-1 width H); towers ``tower``. One
  count per kind for both levels: ``num_shared_experts`` (levels 1 and 2),
  ``num_group_experts`` per group (levels 1 and 2), ``num_task_experts`` per task (level 2).
- Groups: the paper's meta-tasks come from product knowledge (watch-time vs interaction
  tasks); here ``task_groups`` (names or indices), default one group of every task. With one
  group the mask still keeps each task's own experts private.
- Gate inputs: ``v`` at level 1, the group's meta representation at level 2; gates are one
  linear map unless ``gate_hidden_units`` is set.
- Feature-gate: on level-1 experts only (their input is the feature vector), no bias as in
  ``2 * Sigmoid(v(BA))``; A starts at zero so every gate starts at exactly 1.
- Self-gate: on the group meta representations (own: the group's experts), the shared one
  (own: the shared experts) and each task's output (own: its task experts), with the same
  input as the softmax gate beside it. This is our reading of Sec. 4.3: check it against the
  paper before relying on the self-gate ablation.
- No auxiliary loss; the trainer's masked BCE per task, as for every model here.
"""

from __future__ import annotations

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models.experts import (
    ExpertGroup,
    ExpertTrace,
    LowRankFeatureGate,
    MixtureModel,
    SelfGate,
    SoftmaxGate,
    mix,
    run_experts,
)
from finalmlp.models.layers import MLP, FeatureEmbedding, reset_linear_layers
from finalmlp.schema import HoMEConfig
from finalmlp.schema.models import resolve_task_groups


def task_groups(config: HoMEConfig, num_tasks: int) -> list[list[int]]:
    """The config's meta-task groups as task indices (one group of every task by default).

    Raises:
        ConfigError: names not resolved by a full config, an index out of range, a task in no
            group or in two.
    """
    groups = config.task_groups
    if groups is not None and any(isinstance(t, str) for group in groups for t in group):
        raise ConfigError(
            f"model.task_groups names tasks {groups}, but the model was built without the task "
            "names; build it from a full config (data.labels names the tasks) or use indices"
        )
    try:
        return resolve_task_groups(groups, [f"#{t}" for t in range(num_tasks)])
    except ValueError as exc:
        raise ConfigError(f"model.task_groups: {exc}") from None


class HoME(MixtureModel):
    """Two levels of experts under the hierarchy mask, then a tower per task.

    Example:
        >>> config = HoMEConfig(task_groups=[[0, 1], [2]])
        >>> model = HoME(layout, config, num_tasks=3)
        >>> logits = model(batch)  # (B, 3)
    """

    def __init__(self, layout: FieldLayout, config: HoMEConfig, num_tasks: int = 1) -> None:
        super().__init__()
        self.config = config
        self.num_tasks = num_tasks
        self.groups = task_groups(config, num_tasks)
        self.group_of = {t: g for g, group in enumerate(self.groups) for t in group}
        self.embedding = FeatureEmbedding(layout, config.embedding_dim)
        v_dim = config.embedding_dim * layout.num_fields
        self._build_level1(v_dim)
        self._build_level2(config.expert.hidden_units[-1])
        self.towers = nn.ModuleList(
            MLP.from_config(config.expert.hidden_units[-1], config.tower, output_dim=1)
            for _ in range(num_tasks)
        )
        reset_linear_layers(self)
        for module in self.modules():
            if isinstance(module, LowRankFeatureGate):
                module.reset_parameters()  # after the xavier reset: gates start at 1
        self._names()

    def _experts(self, input_dim: int, count: int, shared_input: bool = True) -> ExpertGroup:
        config = self.config
        activation = config.expert_activation
        return ExpertGroup(count, input_dim, config.expert, activation, shared_input)

    def _build_level1(self, v_dim: int) -> None:
        config, num_groups = self.config, len(self.groups)
        shared, per_group = config.num_shared_experts, config.num_group_experts
        hidden = config.gate_hidden_units
        # with feature gates each level-1 expert sees its own gated input (B, k, D)
        own_input = not config.feature_gate
        self.shared1 = self._experts(v_dim, shared, own_input)
        self.group1 = nn.ModuleList(
            self._experts(v_dim, per_group, own_input) for _ in range(num_groups)
        )
        count = shared + num_groups * per_group
        self.feature_gates = (
            nn.ModuleList(LowRankFeatureGate(v_dim, config.feature_gate_rank) for _ in range(count))
            if config.feature_gate
            else None
        )
        self.group_gates = nn.ModuleList(
            SoftmaxGate(v_dim, shared + per_group, hidden) for _ in range(num_groups)
        )
        self.shared_gate = SoftmaxGate(v_dim, count, hidden)
        self.group_self_gates = self._self_gates(v_dim, per_group, num_groups)
        self.shared_self_gates = self._self_gates(v_dim, shared, 1)

    def _build_level2(self, width: int) -> None:
        config, num_groups = self.config, len(self.groups)
        shared, per_group = config.num_shared_experts, config.num_group_experts
        per_task = config.num_task_experts
        self.shared2 = self._experts(width, shared)
        self.group2 = nn.ModuleList(self._experts(width, per_group) for _ in range(num_groups))
        self.task2 = nn.ModuleList(self._experts(width, per_task) for _ in range(self.num_tasks))
        self.task_gates = nn.ModuleList(
            SoftmaxGate(width, shared + per_group + per_task, config.gate_hidden_units)
            for _ in range(self.num_tasks)
        )
        self.task_self_gates = self._self_gates(width, per_task, self.num_tasks)

    def _self_gates(self, input_dim: int, own: int, count: int) -> nn.ModuleList | None:
        if not self.config.self_gate:
            return None
        return nn.ModuleList(SelfGate(input_dim, own) for _ in range(count))

    def _names(self) -> None:
        config = self.config

        def names(owner: str, count: int) -> list[str]:
            return [f"{owner}.{i}" for i in range(count)]

        self.names1 = (
            names("L1.shared", config.num_shared_experts),
            [names(f"L1.group{g}", config.num_group_experts) for g in range(len(self.groups))],
        )
        self.names2 = (
            names("L2.shared", config.num_shared_experts),
            [names(f"L2.group{g}", config.num_group_experts) for g in range(len(self.groups))],
        )
        self.task_names = [
            names(f"L2.task{t}", config.num_task_experts) for t in range(self.num_tasks)
        ]

    def run(self, batch: Batch, trace: ExpertTrace | None) -> torch.Tensor:
        v = self.embedding(batch).flatten(start_dim=1)  # (B, F*E)
        shared_meta, group_meta = self._level1(v, trace)
        return self._level2(shared_meta, group_meta, trace)

    def _level1(
        self, v: torch.Tensor, trace: ExpertTrace | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The meta representations: shared (B, H) and one per group (B, H)."""
        groups = [self.shared1, *self.group1]
        shared = self.config.num_shared_experts
        per_group = self.config.num_group_experts
        if self.feature_gates is not None:  # each expert its own gated view of v
            views = torch.stack([v * gate(v) for gate in self.feature_gates], dim=1)
            bounds = [0, shared, *(shared + (g + 1) * per_group for g in range(len(self.group1)))]
            parts = [e(views[:, a:b]) for e, a, b in zip(groups, bounds, bounds[1:], strict=False)]
        else:
            parts = [e(v) for e in groups]
        outputs = torch.cat(parts, dim=1)  # (B, S + G*K, H)
        shared_out = outputs[:, :shared]
        shared_names, group_names = self.names1
        if trace is not None:
            every = shared_names + [name for names in group_names for name in names]
            trace.experts(every, 1, outputs)
        group_meta = []
        for g, gate in enumerate(self.group_gates):
            own = outputs[:, shared + g * per_group : shared + (g + 1) * per_group]
            weights = gate(v)  # (B, S + K)
            if trace is not None:
                trace.gate(self.groups[g], shared_names + group_names[g], weights)
            meta = mix(weights, torch.cat([shared_out, own], dim=1))
            if self.group_self_gates is not None:
                meta = meta + mix(self.group_self_gates[g](v), own)
            group_meta.append(meta)
        shared_meta = mix(self.shared_gate(v), outputs)
        if self.shared_self_gates is not None:
            shared_meta = shared_meta + mix(self.shared_self_gates[0](v), shared_out)
        return shared_meta, group_meta

    def _level2(
        self, shared_meta: torch.Tensor, group_meta: list[torch.Tensor], trace: ExpertTrace | None
    ) -> torch.Tensor:
        """Each task's gated mixture of shared, group and own experts, then its tower."""
        shared_out = run_experts(self.shared2, shared_meta)  # (B, S, H)
        group_outs = [run_experts(e, m) for e, m in zip(self.group2, group_meta, strict=True)]
        shared_names, group_names = self.names2
        if trace is not None:
            trace.experts(shared_names, 2, shared_out)
            for names, out in zip(group_names, group_outs, strict=True):
                trace.experts(names, 2, out)
        logits = []
        for task, tower in enumerate(self.towers):
            g = self.group_of[task]
            meta = group_meta[g]
            own = run_experts(self.task2[task], meta)  # (B, P, H)
            weights = self.task_gates[task](meta)  # (B, S + K + P)
            if trace is not None:
                trace.experts(self.task_names[task], 2, own)
                names = shared_names + group_names[g] + self.task_names[task]
                trace.gate([task], names, weights)
            out = mix(weights, torch.cat([shared_out, group_outs[g], own], dim=1))
            if self.task_self_gates is not None:
                out = out + mix(self.task_self_gates[task](meta), own)
            logits.append(tower(out))  # (B, 1)
        return torch.cat(logits, dim=1)  # (B, T)
