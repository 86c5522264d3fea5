"""Model configs: one per model in ``finalmlp.models``, selected by ``model.name``.

Part of the config schema (``finalmlp.schema`` re-exports every class here).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from finalmlp.schema.base import StrictModel


class MLPConfig(StrictModel):
    hidden_units: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False


DEFAULT_HEADS = 5


class FinalMLPConfig(StrictModel):
    """FinalMLP (Mao et al., AAAI 2023). The MLP and gate widths default to the paper's Frappe_x1
    settings, and so do the heads: 5 (measured in docs/models.md: the AUC of one head, a
    better logloss, fewer parameters), or, when 5 does not divide both stream widths, the
    largest number up to 10 that does. Gate contexts default to none (learned vectors)."""

    name: Literal["finalmlp"] = "finalmlp"
    embedding_dim: int = Field(10, gt=0)
    mlp1: MLPConfig = MLPConfig(hidden_units=[400], dropout=0.4, batch_norm=True)
    mlp2: MLPConfig = MLPConfig(hidden_units=[100], dropout=0.4, batch_norm=True)
    use_fs: bool = True
    fs_hidden_units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=lambda: [400])
    fs1_context: list[str] = Field(default_factory=list)
    fs2_context: list[str] = Field(default_factory=list)
    num_heads: int = Field(DEFAULT_HEADS, gt=0)
    # Several tasks: each task also gets its own pair of gates (streams run once per task).
    task_gates: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_heads(cls, raw: Any) -> Any:
        """Without ``num_heads``: 5 when it divides both stream widths, else the largest
        number up to 10 that does (1 always does)."""
        if not isinstance(raw, dict) or "num_heads" in raw:
            return raw
        widths = []
        for key in ("mlp1", "mlp2"):
            mlp = raw.get(key, cls.model_fields[key].default)
            units = mlp.get("hidden_units") if isinstance(mlp, dict) else mlp.hidden_units
            if not isinstance(units, list) or not units or not isinstance(units[-1], int):
                return raw  # invalid: the field validation says what is wrong
            widths.append(units[-1])
        if all(w % DEFAULT_HEADS == 0 for w in widths):
            return raw
        heads = max(h for h in range(1, 11) if all(w % h == 0 for w in widths))
        return {**raw, "num_heads": heads}

    @model_validator(mode="after")
    def _heads_divide(self) -> FinalMLPConfig:
        for key in ("fs1_context", "fs2_context"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"{key} lists a feature twice: {names}")
        d1, d2 = self.mlp1.hidden_units[-1], self.mlp2.hidden_units[-1]
        if d1 % self.num_heads or d2 % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must divide both stream widths "
                f"(mlp1 ends with {d1}, mlp2 with {d2}); pick a common divisor such as "
                f"{_common_divisors(d1, d2)}"
            )
        return self


class DualMLPConfig(StrictModel):
    """DualMLP: two MLPs over the same embeddings, each to one logit, summed."""

    name: Literal["dualmlp"] = "dualmlp"
    embedding_dim: int = Field(10, gt=0)
    mlp1: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)
    mlp2: MLPConfig = MLPConfig(hidden_units=[400], dropout=0.2, batch_norm=True)


class LRConfig(StrictModel):
    """Logistic regression over the same fields: the baseline."""

    name: Literal["lr"] = "lr"


# ---- model zoo: FM, DNN, Wide&Deep, DeepFM, DCN, DCNv2
# Defaults are the BARS Frappe_x1 tuned settings (configs/frappe_x1_<name>.yaml cite the source).
class FMConfig(StrictModel):
    """FM (Rendle, ICDM 2010): first-order weights plus pairwise inner products of embeddings."""

    name: Literal["fm"] = "fm"
    embedding_dim: int = Field(10, gt=0)


class DNNConfig(StrictModel):
    """DNN: one MLP over the flat embeddings, to one logit."""

    name: Literal["dnn"] = "dnn"
    embedding_dim: int = Field(10, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class DINConfig(StrictModel):
    """DIN (Zhou et al., KDD 2018): attention-pooled behaviour sequences (features with
    ``pooling: attention``) concatenated with the other fields into an MLP with Dice.

    The MLP defaults are FuxiCTR's DIN ([512, 128, 64], no dropout, no batch norm); its hidden
    activation is Dice as in the paper (FuxiCTR's default is ReLU). ``mba_l2`` is the paper's
    mini-batch aware regularisation (Sec. 4.2): an L2 penalty on the embedding rows a batch
    uses, each divided by how often its id occurs (see finalmlp.models.din).
    """

    name: Literal["din"] = "din"
    embedding_dim: int = Field(10, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[512, 128, 64])
    activation: Literal["dice", "prelu", "relu"] = "dice"
    mba_l2: float = Field(0.0, ge=0)


class WideDeepConfig(StrictModel):
    """Wide & Deep (Cheng et al., DLRS 2016): logistic regression plus a DNN logit."""

    name: Literal["widedeep"] = "widedeep"
    embedding_dim: int = Field(10, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.6, batch_norm=True)


class DeepFMConfig(StrictModel):
    """DeepFM (Guo et al., IJCAI 2017): FM and a DNN over the same embeddings, logits summed."""

    name: Literal["deepfm"] = "deepfm"
    embedding_dim: int = Field(10, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class DCNConfig(StrictModel):
    """DCN (Wang et al., ADKDD 2017): a cross network beside a DNN, concatenated to one logit."""

    name: Literal["dcn"] = "dcn"
    embedding_dim: int = Field(10, gt=0)
    num_cross_layers: int = Field(3, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class LowRankMixtureConfig(StrictModel):
    """DCNv2's cross layers as a mixture of low-rank experts (the paper's DCN-Mix)."""

    low_rank: int = Field(32, gt=0)
    num_experts: int = Field(4, gt=0)


class DCNv2Config(StrictModel):
    """DCNv2 (Wang et al., WWW 2021): full-rank cross network, then (stacked) or beside
    (parallel) a DNN, or alone (crossnet_only; ``mlp`` is then unused). Set
    ``low_rank_mixture`` for the mixture of low-rank experts instead of full-rank layers."""

    name: Literal["dcnv2"] = "dcnv2"
    embedding_dim: int = Field(10, gt=0)
    structure: Literal["stacked", "parallel", "crossnet_only"] = "parallel"
    num_cross_layers: int = Field(4, gt=0)
    mlp: MLPConfig = MLPConfig(hidden_units=[400, 400, 400], dropout=0.4, batch_norm=True)
    low_rank_mixture: LowRankMixtureConfig | None = None


# ---- model zoo: xDeepFM, AutoInt+, FinalNet
# Defaults are the BARS Frappe_x1 tuned settings (configs/frappe_x1_<name>.yaml cite the source).
class XDeepFMConfig(StrictModel):
    """xDeepFM (Lian et al., KDD 2018): linear part + CIN + DNN, logits summed. Every CIN layer
    keeps all its feature maps (no split-half, as FuxiCTR); ``mlp: null`` drops the DNN."""

    name: Literal["xdeepfm"] = "xdeepfm"
    embedding_dim: int = Field(10, gt=0)
    cin_hidden_units: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=lambda: [64], min_length=1
    )
    mlp: MLPConfig | None = MLPConfig(hidden_units=[400, 400, 400], dropout=0.2, batch_norm=True)


class AutoIntConfig(StrictModel):
    """AutoInt+ (Song et al., CIKM 2019): self-attention layers over the field embeddings plus a
    DNN (``mlp: null``: plain AutoInt), optionally a first-order part (``use_wide``).
    ``attention_dim`` is a layer's output width, all heads together (as FuxiCTR)."""

    name: Literal["autoint"] = "autoint"
    embedding_dim: int = Field(10, gt=0)
    num_layers: int = Field(5, gt=0)
    attention_dim: int = Field(128, gt=0)
    num_heads: int = Field(4, gt=0)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # on the attention weights
    use_residual: bool = True
    use_scale: bool = True  # scores / sqrt(attention_dim / num_heads)
    layer_norm: bool = True
    use_wide: bool = False
    mlp: MLPConfig | None = MLPConfig(hidden_units=[400, 400, 400], dropout=0.1, batch_norm=True)

    @model_validator(mode="after")
    def _heads_divide(self) -> AutoIntConfig:
        if self.attention_dim % self.num_heads:
            divisors = [h for h in range(1, self.attention_dim + 1) if self.attention_dim % h == 0]
            raise ValueError(
                f"num_heads={self.num_heads} must divide attention_dim={self.attention_dim}; "
                f"pick one of {divisors[:8]} or change attention_dim"
            )
        return self


class FinalNetConfig(StrictModel):
    """FinalNet (Zhu et al., SIGIR 2023): MLP-like blocks of factorized interaction layers.
    ``1B``: block1 alone (``block2`` is then unused); ``2B``: block1 (on the gated embeddings)
    and block2 (on the plain ones), logits averaged, trained with self-distillation.
    ``residual_type: concat`` needs even widths (half the layer is the product)."""

    name: Literal["finalnet"] = "finalnet"
    embedding_dim: int = Field(10, gt=0)
    block_type: Literal["1B", "2B"] = "2B"
    block1: MLPConfig = MLPConfig(hidden_units=[400, 400], dropout=0.1, batch_norm=True)
    block2: MLPConfig = MLPConfig(hidden_units=[400], dropout=0.1, batch_norm=True)
    use_feature_gating: bool = True  # block1 only
    residual_type: Literal["concat", "sum"] = "concat"

    @model_validator(mode="after")
    def _blocks_fit(self) -> FinalNetConfig:
        blocks = ("block1", "block2") if self.block_type == "2B" else ("block1",)
        for key in blocks if self.residual_type == "concat" else ():
            odd = [u for u in getattr(self, key).hidden_units if u % 2]
            if odd:
                raise ValueError(
                    f"{key}.hidden_units has odd widths {odd}; residual_type 'concat' splits "
                    "each layer in two halves: use even widths or residual_type: sum"
                )
        return self


# ---- multi-task: ShareBottom, MMoE, PLE, HoME (several tasks; each also runs with one)
# Widths default to FuxiCTR 2.3's multi-task zoo (experts [512, 256, 128], towers [128, 64],
# ReLU, no dropout or BatchNorm), so a bench against it compares like with like.
def _expert_mlp() -> MLPConfig:
    return MLPConfig(hidden_units=[512, 256, 128])


def _tower_mlp() -> MLPConfig:
    return MLPConfig(hidden_units=[128, 64])


class ShareBottomConfig(StrictModel):
    """ShareBottom (Caruana, 1997): one MLP shared by every task over the flat embedding, then
    one tower MLP per task to its logit."""

    name: Literal["sharebottom"] = "sharebottom"
    embedding_dim: int = Field(10, gt=0)
    bottom: MLPConfig = Field(default_factory=_expert_mlp)
    tower: MLPConfig = Field(default_factory=_tower_mlp)


class MMoEConfig(StrictModel):
    """MMoE (Ma et al., KDD 2018): ``num_experts`` expert MLPs shared by every task, a softmax
    gate per task over them, a tower per task. ``gate_hidden_units: []`` (the default) is the
    paper's gate, one linear map of the input; FuxiCTR's gates have hidden layers ([128, 64])."""

    name: Literal["mmoe"] = "mmoe"
    embedding_dim: int = Field(10, gt=0)
    num_experts: int = Field(4, ge=2)  # one expert would make the gate a constant 1
    expert: MLPConfig = Field(default_factory=_expert_mlp)
    gate_hidden_units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    tower: MLPConfig = Field(default_factory=_tower_mlp)


class PLEConfig(StrictModel):
    """PLE (Tang et al., RecSys 2020): ``num_levels`` stacked CGC layers, each with
    ``num_task_experts`` experts per task and ``num_shared_experts`` shared ones; a task's
    gate mixes its own and the shared experts, and below the last level a shared gate mixes
    all of them. ``num_levels: 1`` is the paper's CGC."""

    name: Literal["ple"] = "ple"
    embedding_dim: int = Field(10, gt=0)
    num_levels: int = Field(2, ge=1)
    num_shared_experts: int = Field(1, ge=1)
    num_task_experts: int = Field(1, ge=1)
    expert: MLPConfig = Field(default_factory=_expert_mlp)
    gate_hidden_units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    tower: MLPConfig = Field(default_factory=_tower_mlp)


class HoMEConfig(StrictModel):
    """HoME (Wang et al., Kuaishou, arXiv 2408.05430): two levels of experts under a
    hierarchy mask of meta-task groups, normalised Swish experts, feature-gates and self-gates
    (``finalmlp.models.home`` states what follows the paper and what is our choice).

    ``task_groups``: the meta-task groups, a list of lists of task names (``data.labels``) or
    indices, each task in exactly one group; default: every task in one group. The expert
    counts are per level: ``num_shared_experts`` globally shared, ``num_group_experts`` per
    group, ``num_task_experts`` per task (second level only). ``expert.batch_norm`` is the
    expert normalisation (on by default); ``expert_activation: relu``, ``feature_gate: false``
    and ``self_gate: false`` are the paper's ablations.
    """

    name: Literal["home"] = "home"
    embedding_dim: int = Field(10, gt=0)
    task_groups: list[Annotated[list[int | str], Field(min_length=1)]] | None = Field(
        None, min_length=1
    )
    num_shared_experts: int = Field(1, ge=1)
    num_group_experts: int = Field(1, ge=1)
    num_task_experts: int = Field(1, ge=1)
    expert: MLPConfig = MLPConfig(hidden_units=[512, 256, 128], batch_norm=True)
    expert_activation: Literal["swish", "relu"] = "swish"
    gate_hidden_units: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    feature_gate: bool = True
    feature_gate_rank: int = Field(16, gt=0)
    self_gate: bool = True
    tower: MLPConfig = Field(default_factory=_tower_mlp)

    @model_validator(mode="after")
    def _each_task_once(self) -> HoMEConfig:
        if self.task_groups is not None:
            listed = [task for group in self.task_groups for task in group]
            twice = sorted({str(t) for t in listed if listed.count(t) > 1})
            if twice:
                raise ValueError(
                    f"task_groups lists {twice} in more than one place; put each "
                    "task in exactly one group"
                )
            negative = [t for t in listed if isinstance(t, int) and t < 0]
            if negative:
                raise ValueError(f"task_groups has negative task indices {negative}")
        return self


def resolve_task_groups(
    groups: list[list[int | str]] | None, task_names: list[str]
) -> list[list[int]]:
    """HoME's ``task_groups`` as task indices: names looked up in ``task_names``, every task
    in exactly one group; None is one group of every task.

    Raises:
        ValueError: an unknown name or index, or a task in no group.
    """
    if groups is None:
        return [list(range(len(task_names)))]
    resolved: list[list[int]] = []
    for group in groups:
        indices = []
        for task in group:
            if isinstance(task, str):
                if task not in task_names:
                    raise ValueError(
                        f"task_groups names task {task!r}; the tasks are {task_names} (data.labels)"
                    )
                indices.append(task_names.index(task))
            elif not 0 <= task < len(task_names):
                raise ValueError(
                    f"task_groups has task index {task}, but there are {len(task_names)} "
                    f"tasks (0 to {len(task_names) - 1}): {task_names}"
                )
            else:
                indices.append(task)
        resolved.append(indices)
    listed = [t for group in resolved for t in group]
    if len(set(listed)) != len(listed):
        raise ValueError(
            "task_groups lists a task twice (by name and by index); put each "
            "task in exactly one group"
        )
    missing = [task_names[t] for t in range(len(task_names)) if t not in listed]
    if missing:
        raise ValueError(f"task_groups leaves out tasks {missing}; put every task in a group")
    return resolved


ModelConfig = Annotated[
    FinalMLPConfig
    | DualMLPConfig
    | LRConfig
    | FMConfig
    | DNNConfig
    | DINConfig
    | WideDeepConfig
    | DeepFMConfig
    | DCNConfig
    | DCNv2Config
    | XDeepFMConfig
    | AutoIntConfig
    | FinalNetConfig
    | ShareBottomConfig
    | MMoEConfig
    | PLEConfig
    | HoMEConfig,
    Field(discriminator="name"),
]


def _common_divisors(a: int, b: int) -> list[int]:
    return [h for h in range(1, min(a, b) + 1) if a % h == 0 and b % h == 0][:8]


# ---- training defaults per model
# The train settings that matter most differ by model: logistic regression wants a 10x larger
# learning rate and no embedding L2; the deep models the L2 of their BARS Frappe_x1 tuning
# (configs/frappe_x1_<name>.yaml, where the model defaults above come from too). Used for every
# key the config's ``train:`` does not set (docs/models.md lists them).
MODEL_TRAIN_DEFAULTS: dict[str, dict[str, float]] = {
    "lr": {"learning_rate": 1e-2, "embedding_l2": 0.0},
    "fm": {"learning_rate": 1e-3, "embedding_l2": 5e-6},
    "dnn": {"learning_rate": 1e-3, "embedding_l2": 0.05},
    "widedeep": {"learning_rate": 1e-3, "embedding_l2": 0.1},
    "deepfm": {"learning_rate": 1e-3, "embedding_l2": 0.05},
    "dcn": {"learning_rate": 1e-3, "embedding_l2": 0.05},
    "dcnv2": {"learning_rate": 1e-3, "embedding_l2": 0.05},
    "xdeepfm": {"learning_rate": 1e-3, "embedding_l2": 0.1},
    "autoint": {"learning_rate": 1e-3, "embedding_l2": 0.1},
    "dualmlp": {"learning_rate": 1e-3, "embedding_l2": 0.05},
    "finalmlp": {"learning_rate": 1e-3, "embedding_l2": 0.05},
    "finalnet": {"learning_rate": 1e-3, "embedding_l2": 0.1},
    # multi-task models: no tuned settings of their own yet: the package's general defaults
    "sharebottom": {"learning_rate": 1e-3, "embedding_l2": 0.0},
    "mmoe": {"learning_rate": 1e-3, "embedding_l2": 0.0},
    "ple": {"learning_rate": 1e-3, "embedding_l2": 0.0},
    "home": {"learning_rate": 1e-3, "embedding_l2": 0.0},
    # DIN: FuxiCTR's DIN has no embedding regulariser by default; the paper's own is mba_l2
    "din": {"learning_rate": 1e-3, "embedding_l2": 0.0},
}
