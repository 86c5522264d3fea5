"""Typed configuration: which column is what, which model, how to train.

A config file is YAML with three sections, parsed once at the edge into these pydantic models
(``extra="forbid"``: a misspelt key is an error, never silently ignored)::

    data:
      recipe: frappe_x1            # optional built-in defaults (see finalmlp.data.recipes)
      train: data/train.csv        # paths are relative to the config file
      valid: data/valid.csv
      test: data/test.csv
      label: label
      features:
        - {name: user, type: categorical, min_count: 2}
        - {name: price, type: numeric, transform: log}
        - {name: genres, type: sequence, separator: "|", max_len: 5}
    model: {name: finalmlp, embedding_dim: 10, num_heads: 5, ...}
    train: {batch_size: 4096, learning_rate: 1.0e-3, patience: 2, ...}

The sections live in submodules (``features``, ``data``, ``history``, ``models``, ``select``,
``train``); every name is re-exported here, so ``from finalmlp.schema import DataConfig`` works.
"""

from finalmlp.schema.base import StrictModel
from finalmlp.schema.data import (
    DataConfig,
    FieldRange,
    HeaderSetting,
    LabelSpec,
    LibsvmOptions,
    SplitName,
    SplitOptions,
    StreamingOptions,
    SyntheticOptions,
    Task,
)
from finalmlp.schema.features import (
    AttentionOptions,
    CategoricalFeature,
    Feature,
    FeatureBase,
    NumericFeature,
    SequenceFeature,
)
from finalmlp.schema.history import Condition, HistoryOptions, Join
from finalmlp.schema.models import (
    AutoIntConfig,
    DCNConfig,
    DCNv2Config,
    DeepFMConfig,
    DINConfig,
    DNNConfig,
    DualMLPConfig,
    FinalMLPConfig,
    FinalNetConfig,
    FMConfig,
    HoMEConfig,
    LowRankMixtureConfig,
    LRConfig,
    MLPConfig,
    MMoEConfig,
    ModelConfig,
    PLEConfig,
    ShareBottomConfig,
    WideDeepConfig,
    XDeepFMConfig,
)
from finalmlp.schema.select import SelectConfig
from finalmlp.schema.train import (
    MONITOR_METRICS,
    ExperimentConfig,
    MonitorMetric,
    TrainConfig,
    split_metric_key,
)

__all__ = [
    "MONITOR_METRICS",
    "AttentionOptions",
    "AutoIntConfig",
    "CategoricalFeature",
    "Condition",
    "DCNConfig",
    "DCNv2Config",
    "DINConfig",
    "DNNConfig",
    "DataConfig",
    "DeepFMConfig",
    "DualMLPConfig",
    "ExperimentConfig",
    "FMConfig",
    "Feature",
    "FeatureBase",
    "FieldRange",
    "FinalMLPConfig",
    "FinalNetConfig",
    "HeaderSetting",
    "HistoryOptions",
    "HoMEConfig",
    "Join",
    "LRConfig",
    "LabelSpec",
    "LibsvmOptions",
    "LowRankMixtureConfig",
    "MLPConfig",
    "MMoEConfig",
    "ModelConfig",
    "MonitorMetric",
    "NumericFeature",
    "PLEConfig",
    "SelectConfig",
    "SequenceFeature",
    "ShareBottomConfig",
    "SplitName",
    "SplitOptions",
    "StreamingOptions",
    "StrictModel",
    "SyntheticOptions",
    "Task",
    "TrainConfig",
    "WideDeepConfig",
    "XDeepFMConfig",
    "split_metric_key",
]
