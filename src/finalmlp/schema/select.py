"""The ``select`` section of a config: OptFS feature-set search (``finalmlp select``).

Defaults follow the OptFS reference code (fuyuanlyu/OptFS, ``maskTrainer.py``) and the paper's
DeepFM/Criteo row (Lyu et al., WWW 2023): mask init 0.5, final temperature 200, 15 search
epochs, rewind to the end of epoch 1, sparsity 5e-9 (their lambda; see finalmlp.select).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finalmlp.schema.base import StrictModel


class SelectConfig(StrictModel):
    """How ``finalmlp select`` searches the feature set.

    Attributes:
        level: ``value`` (a gate per feature value, OptFS) or ``field`` (a gate per field).
        epochs: search epochs; the temperature grows from 1 to ``final_temperature`` over them.
        final_temperature: the temperature of the last search epoch.
        mask_init: initial mask parameter of every gate (gates start at 1).
        sparsity: lambda of the penalty ``lambda * sum(gates)`` added to the batch loss.
        rewind_epoch: the weights retraining starts from: those after this many search epochs
            (0: the initial weights).
        mask_learning_rate: Adam learning rate of the masks (default: train.learning_rate,
            as the reference).
        keep_fields: fields never dropped (e.g. FinalMLP's gate context fields).
        keep_fraction: a budget: tune ``sparsity`` until about this fraction of values (or
            fields) is kept (``--keep-fraction``).
        budget_searches: searches the budget may spend at most.
        budget_tolerance: a search within this of ``keep_fraction`` ends the tuning.
    """

    level: Literal["value", "field"] = "value"
    epochs: int = Field(15, ge=2)
    final_temperature: float = Field(200.0, ge=1.0)
    mask_init: float = 0.5
    sparsity: float = Field(5e-9, ge=0)
    rewind_epoch: int = Field(1, ge=0)
    mask_learning_rate: float | None = Field(None, gt=0)
    keep_fields: list[str] = Field(default_factory=list)
    keep_fraction: float | None = None
    budget_searches: int = Field(6, ge=1)
    budget_tolerance: float = Field(0.05, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> SelectConfig:
        if self.keep_fraction is not None and not 0 < self.keep_fraction <= 1:
            raise ValueError(
                f"select.keep_fraction must be in (0, 1], got {self.keep_fraction}; e.g. 0.5 "
                "keeps about half of the feature values"
            )
        if self.rewind_epoch >= self.epochs:
            raise ValueError(
                f"select.rewind_epoch {self.rewind_epoch} must be below select.epochs "
                f"{self.epochs} (the paper rewinds to an early epoch of the search)"
            )
        return self
