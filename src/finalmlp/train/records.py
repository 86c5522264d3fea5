"""What a training run records: each validation, and the run's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Validation:
    """One validation: where it happened and what it measured."""

    epoch: int
    step: int
    train_loss: float
    learning_rate: float
    metrics: dict[str, float]
    monitor: float
    improved: bool
    seconds: float


@dataclass
class TrainResult:
    history: list[Validation] = field(default_factory=list)
    best: Validation | None = None
    epochs: int = 0
    steps: int = 0
    train_samples_per_s: float = 0.0
    train_seconds: float = 0.0
    stopped_early: bool = False

    def history_dicts(self) -> list[dict[str, Any]]:
        return [asdict(v) for v in self.history]


# Called after each validation; raising stops training (the tuner's pruning) and the exception
# propagates out of ``fit``.
ValidationHook = Callable[[Validation], None]
