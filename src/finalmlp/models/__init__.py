"""Models, registered by name so a config selects one (``model.name``)."""

from __future__ import annotations

from collections.abc import Callable

from finalmlp.errors import ConfigError
from finalmlp.layout import FieldLayout
from finalmlp.models.autoint import AutoInt
from finalmlp.models.base import CTRModel
from finalmlp.models.dcn import DCN
from finalmlp.models.dcnv2 import DCNv2
from finalmlp.models.deepfm import DeepFM
from finalmlp.models.din import DIN
from finalmlp.models.dnn import DNN
from finalmlp.models.dualmlp import DualMLP
from finalmlp.models.finalmlp import FinalMLP
from finalmlp.models.finalnet import FinalNet
from finalmlp.models.fm import FactorizationMachine
from finalmlp.models.home import HoME
from finalmlp.models.lr import LogisticRegression
from finalmlp.models.mmoe import MMoE
from finalmlp.models.ple import PLE
from finalmlp.models.sharebottom import ShareBottom
from finalmlp.models.widedeep import WideDeep
from finalmlp.models.xdeepfm import XDeepFM
from finalmlp.schema import ModelConfig

MODELS: dict[str, Callable[..., CTRModel]] = {
    "finalmlp": FinalMLP,
    "dualmlp": DualMLP,
    "lr": LogisticRegression,
    "fm": FactorizationMachine,
    "dnn": DNN,
    "din": DIN,
    "widedeep": WideDeep,
    "deepfm": DeepFM,
    "dcn": DCN,
    "dcnv2": DCNv2,
    "xdeepfm": XDeepFM,
    "autoint": AutoInt,
    "finalnet": FinalNet,
    "sharebottom": ShareBottom,
    "mmoe": MMoE,
    "ple": PLE,
    "home": HoME,
}


MULTITASK_MODELS = ("sharebottom", "mmoe", "ple", "home", "finalmlp")


def build_model(layout: FieldLayout, config: ModelConfig, num_tasks: int = 1) -> CTRModel:
    """Instantiate the model named by ``config.name`` for the given fields and tasks.

    Raises:
        ConfigError: several tasks for a model that predicts one.
    """
    model_class = MODELS[config.name]
    if num_tasks == 1:
        return model_class(layout, config)
    if not getattr(model_class, "multitask", False):
        raise ConfigError(
            f"model {config.name!r} predicts one task, but data.labels has {num_tasks}; use a "
            f"multi-task model ({', '.join(MULTITASK_MODELS)}) or one data.label"
        )
    return model_class(layout, config, num_tasks=num_tasks)


__all__ = [
    "DCN",
    "DIN",
    "DNN",
    "MODELS",
    "PLE",
    "AutoInt",
    "CTRModel",
    "DCNv2",
    "DeepFM",
    "DualMLP",
    "FactorizationMachine",
    "FinalMLP",
    "FinalNet",
    "HoME",
    "LogisticRegression",
    "MMoE",
    "ShareBottom",
    "WideDeep",
    "XDeepFM",
    "build_model",
]
