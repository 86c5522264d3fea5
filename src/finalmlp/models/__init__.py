"""Models, registered by name so a config selects one (``model.name``)."""

from __future__ import annotations

from collections.abc import Callable

from finalmlp.layout import FieldLayout
from finalmlp.models.autoint import AutoInt
from finalmlp.models.base import CTRModel
from finalmlp.models.dcn import DCN
from finalmlp.models.dcnv2 import DCNv2
from finalmlp.models.deepfm import DeepFM
from finalmlp.models.dnn import DNN
from finalmlp.models.dualmlp import DualMLP
from finalmlp.models.finalmlp import FinalMLP
from finalmlp.models.finalnet import FinalNet
from finalmlp.models.fm import FactorizationMachine
from finalmlp.models.lr import LogisticRegression
from finalmlp.models.widedeep import WideDeep
from finalmlp.models.xdeepfm import XDeepFM
from finalmlp.schema import ModelConfig

MODELS: dict[str, Callable[..., CTRModel]] = {
    "finalmlp": FinalMLP,
    "dualmlp": DualMLP,
    "lr": LogisticRegression,
    "fm": FactorizationMachine,
    "dnn": DNN,
    "widedeep": WideDeep,
    "deepfm": DeepFM,
    "dcn": DCN,
    "dcnv2": DCNv2,
    "xdeepfm": XDeepFM,
    "autoint": AutoInt,
    "finalnet": FinalNet,
}


def build_model(layout: FieldLayout, config: ModelConfig) -> CTRModel:
    """Instantiate the model named by ``config.name`` for the given fields."""
    return MODELS[config.name](layout, config)


__all__ = [
    "DCN",
    "DNN",
    "MODELS",
    "AutoInt",
    "CTRModel",
    "DCNv2",
    "DeepFM",
    "DualMLP",
    "FactorizationMachine",
    "FinalMLP",
    "FinalNet",
    "LogisticRegression",
    "WideDeep",
    "XDeepFM",
    "build_model",
]
