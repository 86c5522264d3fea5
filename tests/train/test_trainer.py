"""Trainer: early stopping, LR plateaus, best-weight restore, monitor, clipping, L2, scoring."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.data.dataset import EncodedSplit
from finalmlp.errors import DataError, TrainingError
from finalmlp.features.processor import EncodedFeatures
from finalmlp.inference import predict_proba
from finalmlp.layout import FieldLayout
from finalmlp.models import CTRModel, build_model
from finalmlp.schema import FinalMLPConfig, LRConfig, MLPConfig, TrainConfig
from finalmlp.train.trainer import EarlyStopping, Trainer

LAYOUT = FieldLayout(
    table_sizes=(10, 6),
    categorical_fields=("user", "item"),
    categorical_tables=(0, 1),
    numeric_fields=("price",),
)
TINY_FINAL = FinalMLPConfig(
    embedding_dim=4,
    mlp1=MLPConfig(hidden_units=[8], dropout=0.3, batch_norm=True),
    mlp2=MLPConfig(hidden_units=[8], dropout=0.3, batch_norm=True),
    fs_hidden_units=[8],
    num_heads=2,
)


def make_split(num_rows: int, seed: int = 0, labelled: bool = True) -> EncodedSplit:
    """Users 2..9, items 2..5, one numeric value; label 1 exactly for users 2, 3 and 4."""
    rng = np.random.default_rng(seed)
    user = rng.integers(2, 10, num_rows)
    item = rng.integers(2, 6, num_rows)
    categorical = np.stack([user, item], axis=1).astype(np.int32)
    numeric = rng.normal(size=(num_rows, 1)).astype(np.float32)
    label = (user <= 4).astype(np.float32) if labelled else None
    return EncodedSplit(EncodedFeatures(categorical, numeric, ()), label)


def make_model(config: FinalMLPConfig | LRConfig = TINY_FINAL, seed: int = 0) -> CTRModel:
    torch.manual_seed(seed)
    return build_model(LAYOUT, config)


def train_config(**overrides: Any) -> TrainConfig:
    defaults: dict[str, Any] = {
        "batch_size": 16,
        "learning_rate": 1e-2,
        "max_epochs": 3,
        "patience": 100,
        "progress": False,
    }
    return TrainConfig(**{**defaults, **overrides})


def scripted_evaluate(
    monkeypatch: pytest.MonkeyPatch, aucs: list[float], log: list[dict[str, Any]] | None = None
) -> None:
    """Make Trainer.evaluate return the given AUCs in turn; log lr and a copy of the weights."""
    values: Iterator[float] = iter(aucs)

    def evaluate(self: Trainer, split: EncodedSplit) -> dict[str, float]:
        if log is not None:
            log.append(
                {
                    "lr": [g["lr"] for g in self.optimizer.param_groups],
                    "state": copy.deepcopy(self.model.state_dict()),
                }
            )
        return {"auc": next(values), "logloss": 0.5}

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def embedding_norm(model: nn.Module) -> float:
    tables = [m.weight for m in model.modules() if isinstance(m, nn.Embedding)]
    return float(torch.sqrt(sum((w.detach() ** 2).sum() for w in tables)))


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


# ----------------------------------------------------------------------------- EarlyStopping
def test_early_stopping_counts_consecutive_non_improvements() -> None:
    stopper = EarlyStopping(patience=2)
    assert stopper.update(0.5) and stopper.best == 0.5 and stopper.bad_rounds == 0
    assert not stopper.update(0.4) and stopper.bad_rounds == 1 and not stopper.should_stop
    assert stopper.update(0.6) and stopper.bad_rounds == 0  # an improvement resets the count
    assert not stopper.update(0.6)  # equal is not better
    assert not stopper.should_stop
    assert not stopper.update(0.59)
    assert stopper.should_stop and stopper.best == 0.6 and stopper.bad_rounds == 2


def test_early_stopping_min_delta() -> None:
    stopper = EarlyStopping(patience=1, min_delta=0.01)
    assert stopper.update(-5.0)  # anything beats -inf, negative monitors included
    assert not stopper.update(-4.995)  # gain 0.005 < min_delta
    assert stopper.should_stop
    assert stopper.update(-4.98)  # gain 0.02 > min_delta over the best, not the last
    assert stopper.best == -4.98 and not stopper.should_stop


# ----------------------------------------------------------------------------- LR and stopping
def test_lr_decays_after_each_non_improvement_and_is_floored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[dict[str, Any]] = []
    scripted_evaluate(monkeypatch, [0.5, 0.6, 0.6, 0.55, 0.7, 0.65, 0.64], log)
    config = train_config(max_epochs=7, lr_decay_factor=0.5, min_lr=3e-3)
    trainer = Trainer(make_model(), config)
    result = trainer.fit(make_split(32), make_split(16, seed=1))
    recorded = [v.learning_rate for v in result.history]
    # lr in force at each validation: decays after the 3rd and 4th (0.01 -> 0.005 -> floor
    # 0.003), none after the improving 5th, stays at the floor after the 6th.
    expected = [1e-2, 1e-2, 1e-2, 5e-3, 3e-3, 3e-3, 3e-3]
    assert recorded == pytest.approx(expected, rel=1e-12)
    assert [entry["lr"][0] for entry in log] == pytest.approx(expected, rel=1e-12)
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs == pytest.approx([3e-3] * len(lrs))  # every group, floored after the last decay
    assert [v.improved for v in result.history] == [True, True, False, False, True, False, False]
    assert not result.stopped_early and result.epochs == 7


def test_lr_constant_without_reduce_on_plateau(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_evaluate(monkeypatch, [0.5, 0.4, 0.3, 0.2])
    config = train_config(max_epochs=4, reduce_lr_on_plateau=False, lr_decay_factor=0.5)
    trainer = Trainer(make_model(), config)
    result = trainer.fit(make_split(32), make_split(16, seed=1))
    assert [v.learning_rate for v in result.history] == [1e-2] * 4
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-2


def test_stops_after_patience_non_improvements_in_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_evaluate(monkeypatch, [0.5, 0.6, 0.59, 0.6, 0.9, 0.9])
    trainer = Trainer(make_model(), train_config(max_epochs=6, patience=2))
    result = trainer.fit(make_split(32), make_split(16, seed=1))
    assert result.stopped_early
    assert len(result.history) == 4 and result.epochs == 4
    assert result.steps == 4 * 2  # 32 rows in batches of 16
    assert result.best is not None and result.best.monitor == 0.6 and result.best.epoch == 2


def test_non_consecutive_non_improvements_do_not_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_evaluate(monkeypatch, [0.5, 0.4, 0.6, 0.5, 0.7])
    trainer = Trainer(make_model(), train_config(max_epochs=5, patience=2))
    result = trainer.fit(make_split(32), make_split(16, seed=1))
    assert not result.stopped_early
    assert len(result.history) == 5 and result.epochs == 5
    assert result.best is not None and result.best.epoch == 5


def test_best_weights_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[dict[str, Any]] = []
    scripted_evaluate(monkeypatch, [0.5, 0.7, 0.6, 0.65], log)
    trainer = Trainer(make_model(), train_config(max_epochs=4, patience=2))
    result = trainer.fit(make_split(32), make_split(16, seed=1))
    assert result.stopped_early and len(log) == 4
    assert result.best is result.history[1]
    assert_same_state(trainer.model.state_dict(), log[1]["state"])
    # Training did move the weights after the best validation, so the restore is not a no-op.
    weights = [k for k in log[1]["state"] if "weight" in k]
    assert any(not torch.equal(log[1]["state"][k], log[3]["state"][k]) for k in weights)


def test_restored_model_scores_like_the_best_validation() -> None:
    torch.manual_seed(0)
    trainer = Trainer(make_model(LRConfig()), train_config(max_epochs=4, learning_rate=0.05))
    valid = make_split(64, seed=1)
    result = trainer.fit(make_split(96), valid)
    assert result.best is not None
    assert trainer.evaluate(valid) == pytest.approx(result.best.metrics, rel=1e-9)


# ----------------------------------------------------------------------------- monitor
def test_monitor_is_the_weighted_sum_of_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = iter(
        [
            {"auc": 0.80, "logloss": 0.50},  # 0.30
            {"auc": 0.81, "logloss": 0.60},  # 0.21: better AUC, worse monitor
            {"auc": 0.79, "logloss": 0.40},  # 0.39: worse AUC, best monitor
        ]
    )
    monkeypatch.setattr(Trainer, "evaluate", lambda self, split: next(metrics))
    config = train_config(max_epochs=3, monitor={"auc": 1.0, "logloss": -1.0})
    result = Trainer(make_model(), config).fit(make_split(32), make_split(16, seed=1))
    assert [v.monitor for v in result.history] == pytest.approx([0.30, 0.21, 0.39])
    assert [v.improved for v in result.history] == [True, False, True]
    assert result.best is result.history[2]


def test_monitor_of_real_metrics() -> None:
    config = train_config(max_epochs=2, monitor={"auc": 2.0, "logloss": -0.5})
    result = Trainer(make_model(), config).fit(make_split(48), make_split(32, seed=1))
    for record in result.history:
        expected = 2.0 * record.metrics["auc"] - 0.5 * record.metrics["logloss"]
        assert record.monitor == pytest.approx(expected, rel=1e-12)
        assert set(record.metrics) >= {"auc", "logloss"}


# ----------------------------------------------------------------------------- schedule
def test_validates_once_per_epoch_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_evaluate(monkeypatch, [0.1 * i for i in range(1, 10)])
    result = Trainer(make_model(), train_config(max_epochs=3)).fit(
        make_split(100), make_split(16, seed=1)
    )
    assert [(v.epoch, v.step) for v in result.history] == [(1, 7), (2, 14), (3, 21)]
    assert result.steps == 21


def test_eval_every_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_evaluate(monkeypatch, [0.01 * i for i in range(1, 20)])
    config = train_config(max_epochs=3, eval_every_steps=3)
    result = Trainer(make_model(), config).fit(make_split(100), make_split(16, seed=1))
    steps = [v.step for v in result.history]
    assert steps == [3, 6, 9, 12, 15, 18, 21]  # 7 batches per epoch, 21 in all
    assert [v.epoch for v in result.history] == [math.ceil(s / 7) for s in steps]


def test_steps_after_the_last_multiple_of_n_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_evaluate(monkeypatch, [0.5])
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = train_config(max_epochs=1, eval_every_steps=100)  # more than the 7 steps
    result = Trainer(model, config).fit(make_split(100), make_split(16, seed=1))
    assert [v.step for v in result.history] == [7]
    assert result.best is not None
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_loss_is_the_row_weighted_mean_since_the_last_validation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    losses: list[tuple[float, int]] = []
    real_step = Trainer._train_step

    def train_step(self: Trainer, batch: Batch, rows: int, step: int, epoch: int) -> float:
        loss = real_step(self, batch, rows, step, epoch)
        losses.append((loss, batch.size))
        return loss

    monkeypatch.setattr(Trainer, "_train_step", train_step)
    config = train_config(max_epochs=2, eval_every_steps=4)
    result = Trainer(make_model(), config).fit(make_split(100), make_split(16, seed=1))
    # 7 batches per epoch (6 x 16 + 4): validations after steps 4, 8, 12 and the last, 14.
    assert [v.step for v in result.history] == [4, 8, 12, 14]
    previous = 0
    for record in result.history:
        window = losses[previous : record.step]
        previous = record.step
        mean = sum(loss * size for loss, size in window) / sum(size for _, size in window)
        assert record.train_loss == pytest.approx(mean, rel=1e-9)


# ----------------------------------------------------------------------------- determinism
def _fit_once(seed: int = 2021) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    trainer = Trainer(make_model(seed=0), train_config(max_epochs=3, seed=seed))
    result = trainer.fit(make_split(80), make_split(32, seed=1))
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history_dicts()]
    return history, trainer.model.state_dict()


def test_same_seed_same_history_and_weights() -> None:
    history_a, state_a = _fit_once()
    history_b, state_b = _fit_once()
    assert history_a == history_b  # exact floats
    assert_same_state(state_a, state_b)
    _, state_c = _fit_once(seed=7)  # another shuffle order gives other weights
    assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a)


# ----------------------------------------------------------------------------- clipping, L2
def test_gradient_clipping_applied_with_max_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, float, float]] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        parameters = list(parameters)
        total = real_clip(parameters, max_norm, *args, **kwargs)
        grads = [p.grad for p in parameters if p.grad is not None]
        after = float(torch.sqrt(sum((g**2).sum() for g in grads)))
        calls.append((len(parameters), max_norm, after))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    model = make_model()
    config = train_config(max_epochs=2, max_grad_norm=1e-3)
    result = Trainer(model, config).fit(make_split(48), make_split(16, seed=1))
    assert len(calls) == result.steps == 6
    num_parameters = len(list(model.parameters()))
    for count, max_norm, after in calls:
        assert count == num_parameters and max_norm == 1e-3
        assert after <= 1e-3 * (1 + 1e-4)  # the step saw clipped gradients


def test_no_clipping_when_max_grad_norm_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a))
    config = train_config(max_epochs=1, max_grad_norm=None)
    Trainer(make_model(), config).fit(make_split(48), make_split(16, seed=1))
    assert calls == []


def test_embedding_l2_shrinks_embedding_tables() -> None:
    norms = {}
    for l2 in (0.0, 0.5):
        config = train_config(max_epochs=4, learning_rate=0.05, embedding_l2=l2)
        trainer = Trainer(make_model(LRConfig()), config)
        trainer.fit(make_split(128), make_split(32, seed=1))
        norms[l2] = embedding_norm(trainer.model)
    assert norms[0.5] < 0.5 * norms[0.0]


def test_embedding_l2_leaves_the_network_alone() -> None:
    # Only nn.Embedding tables are penalised by embedding_l2; Linear weights are net_l2's.
    model = make_model()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.zeros_(module.weight)
    with torch.no_grad():
        assert float(model.regularization(1.0, 0.0)) == 0.0
        assert float(model.regularization(0.0, 1.0)) > 0.0


# ----------------------------------------------------------------------------- scoring
def test_predict_proba_matches_forward_in_row_order_in_eval_mode() -> None:
    model = make_model()  # dropout and batch norm: train and eval mode differ
    Trainer(model, train_config(max_epochs=1)).fit(make_split(64), make_split(16, seed=1))
    split = make_split(50, seed=3, labelled=False)
    model.train()
    first = predict_proba(model, split, batch_size=7)  # 8 batches, the last one short
    assert not model.training
    second = predict_proba(model, split, batch_size=50)
    assert first.dtype == np.float64 and first.shape == (50, 1)  # (N, T)
    np.testing.assert_array_equal(first, predict_proba(model, split, batch_size=7))
    np.testing.assert_allclose(first, second, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        batch = Batch(
            torch.from_numpy(split.features.categorical),
            torch.from_numpy(split.features.numeric),
        )
        expected = torch.sigmoid(model(batch).double()).numpy()
    np.testing.assert_allclose(first, expected, rtol=1e-6, atol=1e-7)
    assert np.all((first > 0) & (first < 1))
    assert len(np.unique(first)) > 1


def test_trainer_predict_uses_predict_proba() -> None:
    model = make_model()
    trainer = Trainer(model, train_config(max_epochs=1, eval_batch_size=5))
    split = make_split(23, seed=4)
    np.testing.assert_array_equal(trainer.predict(split), predict_proba(model, split, 5))
    np.testing.assert_allclose(trainer.predict(split), predict_proba(model, split, 64), rtol=1e-6)


def test_fit_and_evaluate_need_labels() -> None:
    trainer = Trainer(make_model(), train_config())
    unlabelled = make_split(16, labelled=False)
    with pytest.raises(DataError, match="the validation split has no labels"):
        trainer.fit(make_split(16), unlabelled)
    with pytest.raises(ValueError, match="evaluation needs labels"):
        trainer.evaluate(unlabelled)


def test_single_class_validation_split_is_refused() -> None:
    split = make_split(16)
    one_class = EncodedSplit(split.features, np.ones(16, dtype=np.float32))
    with pytest.raises(DataError, match="validation split has only label 1"):
        Trainer(make_model(), train_config()).fit(make_split(32), one_class)


def test_non_finite_loss_stops_with_a_clear_error() -> None:
    model = make_model()
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"loss became nan at step 1 \(epoch 1\); lower"):
        Trainer(model, train_config()).fit(make_split(32), make_split(16, seed=1))


# ----------------------------------------------------------------------------- learning
@pytest.mark.parametrize("config", [LRConfig(), TINY_FINAL], ids=["lr", "finalmlp"])
def test_learns_a_label_that_depends_on_one_categorical_id(
    config: FinalMLPConfig | LRConfig,
) -> None:
    train = make_split(512)
    trainer = Trainer(make_model(config), train_config(max_epochs=8, learning_rate=0.02))
    before = trainer.evaluate(train)["auc"]
    result = trainer.fit(train, make_split(128, seed=1))
    after = trainer.evaluate(train)
    assert after["auc"] > 0.9, (before, after)
    assert result.best is not None and result.best.metrics["auc"] > 0.9


def test_device_resolution() -> None:
    from finalmlp.errors import ConfigError
    from finalmlp.train.run import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            resolve_device("cuda")
