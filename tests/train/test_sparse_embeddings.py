"""train.sparse_embeddings: a step moves only the table rows the batch looked up, the L2
penalty covers exactly those rows, clipping treats sparse gradients as their dense form,
and the optimizer state survives a checkpoint round trip."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from conftest import random_batch
from finalmlp.layout import FieldLayout
from finalmlp.models import build_model
from finalmlp.models.layers import FeatureEmbedding
from finalmlp.schema import FinalMLPConfig, TrainConfig
from finalmlp.train.optim import SparseDenseAdam, clip_gradients
from finalmlp.train.trainer import Trainer

MODEL = FinalMLPConfig(
    embedding_dim=4,
    mlp1={"hidden_units": [16], "dropout": 0.0},
    mlp2={"hidden_units": [16], "dropout": 0.0},
    fs_hidden_units=[8],
    fs1_context=["user"],
    num_heads=2,
)


def _trainer(layout: FieldLayout, sparse: bool, embedding_l2: float = 0.1) -> Trainer:
    torch.manual_seed(0)
    model = build_model(layout, MODEL)
    config = TrainConfig(sparse_embeddings=sparse, embedding_l2=embedding_l2, max_grad_norm=10.0)
    return Trainer(model, config)


def _looked_up(model: nn.Module, batch) -> set[int]:
    """Rows of the main embedding table the batch reads (categorical fields and sequences)."""
    emb = model.embedding
    rows = set((batch.categorical + emb.cat_offsets).flatten().tolist())
    for col, offset in zip(emb.seq_cols, emb.seq_offsets, strict=True):
        rows |= set((batch.sequences[col] + offset).flatten().tolist())
    return rows


def test_a_sparse_step_moves_only_the_rows_of_the_batch(layout: FieldLayout) -> None:
    batch = random_batch(layout, size=8, seed=1)
    for sparse in (True, False):
        trainer = _trainer(layout, sparse)
        table = trainer.model.embedding.table.weight
        before = table.detach().clone()
        trainer.model.train()
        trainer._train_step(batch, batch.size)
        changed = set(torch.nonzero((table.detach() != before).any(dim=1)).flatten().tolist())
        # padding rows (zero, masked out of sequences) get a zero gradient either way
        padding = set(torch.nonzero((before == 0).all(dim=1)).flatten().tolist())
        if sparse:
            assert changed == _looked_up(trainer.model, batch) - padding
            assert padding & _looked_up(trainer.model, batch)  # the test covers that case
            assert isinstance(trainer.optimizer, SparseDenseAdam)
        else:  # dense Adam + the full-table penalty move every row
            assert changed == set(range(table.shape[0])) - padding


def test_batch_l2_is_the_penalty_of_the_distinct_rows_looked_up(layout: FieldLayout) -> None:
    trainer = _trainer(layout, sparse=True)
    model = trainer.model.train()
    batch = random_batch(layout, size=16, seed=2)
    model(batch)
    emb: FeatureEmbedding = model.embedding
    rows = torch.tensor(sorted(_looked_up(model, batch)))
    expected = emb.table.weight[rows].pow(2).sum()
    assert torch.allclose(emb.batch_l2(), expected)
    assert emb.batch_l2().item() == 0.0  # consumed: the next batch starts afresh
    model.eval()
    model(batch)
    assert emb.batch_l2().item() == 0.0  # evaluation records nothing


def test_clip_gradients_treats_sparse_as_dense() -> None:
    torch.manual_seed(3)
    sparse_table = nn.Embedding(50, 6, sparse=True)
    dense_table = copy.deepcopy(sparse_table)
    dense_table.sparse = False
    linear = nn.Linear(6, 1)
    linear2 = copy.deepcopy(linear)
    ids = torch.tensor([1, 5, 5, 9, 49])
    (linear(sparse_table(ids)).sum() * 100).backward()
    (linear2(dense_table(ids)).sum() * 100).backward()
    ours = clip_gradients([sparse_table.weight, *linear.parameters()], max_norm=1.0)
    theirs = nn.utils.clip_grad_norm_([dense_table.weight, *linear2.parameters()], max_norm=1.0)
    assert torch.allclose(ours, theirs)
    assert sparse_table.weight.grad is not None and dense_table.weight.grad is not None
    assert torch.allclose(sparse_table.weight.grad.to_dense(), dense_table.weight.grad, atol=1e-7)
    assert torch.allclose(linear.weight.grad, linear2.weight.grad, atol=1e-7)


def test_sparse_optimizer_state_round_trips(layout: FieldLayout) -> None:
    batches = [random_batch(layout, size=8, seed=s) for s in range(4)]
    straight = _trainer(layout, sparse=True)
    straight.model.train()
    for b in batches:
        straight._train_step(b, b.size)

    first = _trainer(layout, sparse=True)
    first.model.train()
    for b in batches[:2]:
        first._train_step(b, b.size)
    saved_model = copy.deepcopy(first.model.state_dict())
    saved_optim = copy.deepcopy(first.optimizer.state_dict())
    second = _trainer(layout, sparse=True)
    second.model.load_state_dict(saved_model)
    second.optimizer.load_state_dict(saved_optim)
    second.model.train()
    for b in batches[2:]:
        second._train_step(b, b.size)
    for name, value in straight.model.state_dict().items():
        assert torch.allclose(value, second.model.state_dict()[name], atol=1e-6), name


@pytest.mark.parametrize("sparse", [True, False])
def test_learning_rate_decay_reaches_both_optimizers(layout: FieldLayout, sparse: bool) -> None:
    trainer = _trainer(layout, sparse)
    trainer._decay_learning_rate()
    assert {g["lr"] for g in trainer.optimizer.param_groups} == {1e-4}


def test_without_embedding_l2_no_ids_are_kept(layout: FieldLayout) -> None:
    """The rows of each batch are recorded only for the L2 penalty: with embedding_l2 = 0
    nothing accumulates from step to step."""
    trainer = _trainer(layout, sparse=True, embedding_l2=0.0)
    trainer.model.train()
    for seed in range(3):
        batch = random_batch(layout, size=8, seed=seed)
        trainer._train_step(batch, batch.size)
    tables = [m for m in trainer.model.modules() if isinstance(m, FeatureEmbedding)]
    assert tables and all(not m._batch_ids for m in tables)
