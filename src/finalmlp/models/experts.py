"""Blocks of the multi-task mixture-of-experts models (MMoE, PLE, HoME) and their statistics.

Shapes: B batch, D input width, k experts in a group, H an expert's output width.

A mixture-of-experts model subclasses :class:`MixtureModel`: its ``run(batch, trace)`` is the
forward pass and, given an :class:`ExpertTrace`, also records every expert's output and every
task's gate weights, from which :meth:`MixtureModel.expert_stats` computes the statistics the
report shows (the expert-collapse signal of HoME, Sec. 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import Dropout
from finalmlp.schema import MLPConfig


class BatchedLinear(nn.Module):
    """k independent Linear maps applied at once, one matrix product for all of them.

    ``shared_input``: the input is the same (B, D) for every map (an expert group's first
    layer on the field embedding): one (B, D) x (D, k*O) product, weight stored (D, k, O).
    Otherwise the input is (B, k, D), a batched product over k, weight stored (k, D, O).
    Each map is initialised as ``nn.Linear`` is here (xavier-normal weights, zero biases).
    """

    def __init__(self, num: int, input_dim: int, output_dim: int, shared_input: bool) -> None:
        super().__init__()
        shape = (input_dim, num, output_dim) if shared_input else (num, input_dim, output_dim)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(num, output_dim))
        self.shared_input = shared_input
        self.num, self.output_dim = num, output_dim
        std = (2.0 / (input_dim + output_dim)) ** 0.5
        nn.init.normal_(self.weight, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input:  # (B, D) -> (B, k, O)
            weight = self.weight.view(self.weight.shape[0], -1)
            return torch.addmm(self.bias.view(-1), x, weight).view(-1, self.num, self.output_dim)
        out = torch.baddbmm(self.bias.unsqueeze(1), x.transpose(0, 1), self.weight)  # (k, B, O)
        return out.transpose(0, 1)


class ExpertGroup(nn.Module):
    """k experts of the same shape (``config``) computed together: per hidden layer one
    batched matrix product for all of them, then BatchNorm (``config.batch_norm``, statistics
    per expert and unit), the activation (ReLU, or Swish for HoME's normalised experts) and
    Dropout. The same function as k separate MLPs (Linear -> BatchNorm -> activation ->
    Dropout per layer), in a few large products instead of many small ones (FuxiCTR runs
    its experts one after another). With Swish and BatchNorm an expert is HoME's normalised
    expert (Sec. 4.1): every output unit is standardised over the batch, then passed
    through Swish, which is zero only at 0.

    (B, D) (one input for every expert; ``shared_input``) or (B, k, D) -> (B, k, H).
    """

    def __init__(
        self,
        num: int,
        input_dim: int,
        config: MLPConfig,
        activation: Literal["relu", "swish"] = "relu",
        shared_input: bool = True,
    ) -> None:
        super().__init__()
        self.num = num
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = input_dim
        for index, units in enumerate(config.hidden_units):
            first_shared = shared_input and index == 0
            self.linears.append(BatchedLinear(num, width, units, first_shared))
            self.norms.append(nn.BatchNorm1d(num * units) if config.batch_norm else nn.Identity())
            width = units
        self.activation = nn.SiLU() if activation == "swish" else nn.ReLU()
        self.dropout = Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.output_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms, strict=True):
            x = linear(x)  # (B, k, H)
            if isinstance(norm, nn.BatchNorm1d):
                x = norm(x.reshape(x.shape[0], -1)).view(x.shape[0], self.num, -1)
            x = self.dropout(self.activation(x))
        return x


def run_experts(experts: nn.Module | Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Every expert (an ExpertGroup, a ModuleList, or any modules) on the same input:
    (B, D) -> (B, k, H)."""
    if isinstance(experts, ExpertGroup):
        return experts(x)
    modules = experts.children() if isinstance(experts, nn.Module) else experts
    return torch.stack([expert(x) for expert in modules], dim=1)


class SoftmaxGate(nn.Module):
    """A gate: ``softmax(MLP(x))`` over k experts, (B, D) -> (B, k), rows summing to 1.

    With no hidden units (the default of every config) it is one linear map, MMoE's
    ``g(x) = softmax(W x)`` (Ma et al., Eq. 5)."""

    def __init__(self, input_dim: int, num_experts: int, hidden_units: Sequence[int] = ()) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU()]
            width = units
        layers.append(nn.Linear(width, num_experts))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.mlp(x), dim=-1)


def mix(weights: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """The weighted sum of expert outputs: weights (B, k), outputs (B, k, H) -> (B, H)."""
    return torch.bmm(weights.unsqueeze(1), outputs).squeeze(1)


class LowRankFeatureGate(nn.Module):
    """HoME's feature-gate (Sec. 4.3): ``2 * sigmoid(v B A)``, B (D, r), A (r, D), no bias.

    Each expert multiplies its input by its own gate, so experts see the features weighted
    differently (FinalMLP's feature gating, made low-rank). ``A`` (``up``) starts at zero,
    so every gate starts at exactly 1 = 2 * sigmoid(0) and the model starts as the ungated
    one; as in LoRA, ``B`` (``down``) then gets its first gradient once ``A`` has moved.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.down.weight)
        nn.init.zeros_(self.up.weight)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(self.up(self.down(v)))  # (B, D)


class SelfGate(nn.Module):
    """HoME's self-gate (Sec. 4.3): weights over a gate's own experts only, ``sigmoid(W x)``
    for one expert and ``softmax(W x)`` for several; their mixture is added to the gated
    output as a residual, so these experts reach the layer above whatever the softmax gate
    gives them. (B, D) -> (B, k)."""

    def __init__(self, input_dim: int, num_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, num_experts)
        self.num_experts = num_experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.linear(x)
        return torch.sigmoid(logits) if self.num_experts == 1 else torch.softmax(logits, dim=-1)


# ----------------------------------------------------------------------------- statistics
class ExpertTrace:
    """What one traced forward pass saw: expert outputs and each task's gate weights.

    Args:
        num_tasks: T.
    """

    def __init__(self, num_tasks: int) -> None:
        self.outputs: dict[str, torch.Tensor] = {}  # expert name -> (B, H)
        self.levels: dict[str, int] = {}
        self.task_gates: list[dict[str, torch.Tensor]] = [{} for _ in range(num_tasks)]

    def experts(self, names: Sequence[str], level: int, outputs: torch.Tensor) -> None:
        """Record k experts' outputs (B, k, H) under their names, at level ``level`` (1, 2..)."""
        for index, name in enumerate(names):
            self.outputs[name] = outputs[:, index]
            self.levels[name] = level

    def gate(self, tasks: Iterable[int], names: Sequence[str], weights: torch.Tensor) -> None:
        """Record a gate (B, k) over the named experts as the direct gate of ``tasks``."""
        for task in tasks:
            for index, name in enumerate(names):
                self.task_gates[task][name] = weights[:, index]


@dataclass(frozen=True)
class ExpertStats:
    """Expert statistics over the rows of some batches (eval mode, no dropout).

    Attributes:
        experts: expert names, e.g. ``L1.shared.0`` (level, owner, index).
        levels: each expert's level (1 for MMoE's single level).
        gate_weights: [task][expert], the mean over rows of the softmax weight the task's
            direct gate at that expert's level gives the expert: MMoE the task's gate; PLE the
            task's gate at that level; HoME the gate of the task's group at level 1 and the
            task's gate at level 2. Exactly 0 where no such gate sees the expert (the
            hierarchy mask). For each task the weights of one level sum to 1. HoME's self-gate
            residual and the shared gates (which feed no task directly) are not included.
        dead_fraction: per expert, the fraction of its output values (rows x units of its
            last layer, after its activation and, with expert normalisation, after
            BatchNorm) that are exactly 0.0: dead ReLU units. Swish is 0 only at 0, so
            HoME's is near 0 by construction: compare ``mean_abs`` too.
        mean_abs: per expert, the mean absolute output value: the output scale the gates mix.
        rows: rows the statistics cover.
    """

    experts: list[str]
    levels: list[int]
    gate_weights: list[list[float]]
    dead_fraction: list[float]
    mean_abs: list[float]
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Totals:
    """Running sums over batches, turned into :class:`ExpertStats` at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.levels: dict[str, int] = {}
        self.gates: list[dict[str, float]] = []
        self.zeros: dict[str, float] = {}
        self.abs_sum: dict[str, float] = {}
        self.values: dict[str, int] = {}
        self.rows = 0

    def add(self, trace: ExpertTrace, rows: int) -> None:
        if not self.names:
            self.names = list(trace.outputs)
            self.levels = dict(trace.levels)
            self.gates = [dict.fromkeys(self.names, 0.0) for _ in trace.task_gates]
        for name, out in trace.outputs.items():
            self.zeros[name] = self.zeros.get(name, 0.0) + float((out == 0).sum())
            self.abs_sum[name] = self.abs_sum.get(name, 0.0) + float(out.abs().sum())
            self.values[name] = self.values.get(name, 0) + out.numel()
        for totals, gates in zip(self.gates, trace.task_gates, strict=True):
            for name, weights in gates.items():
                totals[name] += float(weights.sum())
        self.rows += rows

    def stats(self) -> ExpertStats:
        rows, names = max(self.rows, 1), self.names
        return ExpertStats(
            experts=names,
            levels=[self.levels[n] for n in names],
            gate_weights=[[totals[n] / rows for n in names] for totals in self.gates],
            dead_fraction=[self.zeros[n] / max(self.values[n], 1) for n in names],
            mean_abs=[self.abs_sum[n] / max(self.values[n], 1) for n in names],
            rows=self.rows,
        )


class MixtureModel(CTRModel):
    """A multi-task mixture-of-experts model: ``run(batch, trace)`` is its forward pass."""

    multitask = True

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.run(batch, None)

    def run(self, batch: Batch, trace: ExpertTrace | None) -> torch.Tensor:  # pragma: no cover
        """Logits (B, T); with a trace, also record expert outputs and task gates in it."""
        raise NotImplementedError

    def expert_stats(self, batches: Batch | Iterable[Batch]) -> ExpertStats:
        """Gate weights per task and dead/scale figures per expert over some batches (see
        :class:`ExpertStats` for the definitions): in eval mode, without gradients; the
        model's mode is restored afterwards. Cost: one forward pass per batch."""
        was_training = self.training
        self.eval()
        totals = _Totals()
        try:
            with torch.no_grad():
                for batch in [batches] if isinstance(batches, Batch) else batches:
                    trace = ExpertTrace(self.num_tasks)
                    self.run(batch, trace)
                    totals.add(trace, batch.size)
        finally:
            self.train(was_training)
        return totals.stats()
