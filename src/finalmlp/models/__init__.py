"""Models, registered by name so a config selects one (``model.name``)."""

from __future__ import annotations

from collections.abc import Callable

from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.models.dualmlp import DualMLP
from finalmlp.models.finalmlp import FinalMLP
from finalmlp.models.lr import LogisticRegression
from finalmlp.schema import DualMLPConfig, FinalMLPConfig, LRConfig

MODELS: dict[str, Callable[..., CTRModel]] = {
    "finalmlp": FinalMLP,
    "dualmlp": DualMLP,
    "lr": LogisticRegression,
}


def build_model(layout: FieldLayout, config: FinalMLPConfig | DualMLPConfig | LRConfig) -> CTRModel:
    """Instantiate the model named by ``config.name`` for the given fields."""
    return MODELS[config.name](layout, config)


__all__ = ["MODELS", "CTRModel", "DualMLP", "FinalMLP", "LogisticRegression", "build_model"]
