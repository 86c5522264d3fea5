"""Permutation importance finds the one field a model uses; permuting keeps rows intact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from finalmlp.batch import Batch
from finalmlp.data.dataset import EncodedSplit
from finalmlp.features.processor import EncodedFeatures
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.report.build import sample_rows
from finalmlp.report.importance import permutation_importance, permute_field

LAYOUT = FieldLayout(
    table_sizes=(12, 12, 20),
    categorical_fields=("signal", "noise"),
    categorical_tables=(0, 1),
    numeric_fields=("price",),
    sequence_fields=("history",),
    sequence_tables=(2,),
)


class SignalOnly(CTRModel):
    """A model whose logit is a learned value of field ``signal`` alone (ignores the rest)."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.linspace(-3.0, 3.0, 12))

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.value[batch.categorical[:, 0].long()].unsqueeze(-1)  # (B, 1)


def _split(rows: int = 4_000, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    categorical = rng.integers(2, 12, size=(rows, 2)).astype(np.int32)
    numeric = rng.normal(size=(rows, 1)).astype(np.float32)
    history = rng.integers(0, 20, size=(rows, 5)).astype(np.int32)
    click_rate = 1 / (1 + np.exp(-np.linspace(-3.0, 3.0, 12)[categorical[:, 0]]))
    label = (rng.uniform(size=rows) < click_rate).astype(np.float32)
    return EncodedSplit(EncodedFeatures(categorical, numeric, (history,)), label)


def test_importance_finds_the_informative_field_and_zero_for_ignored_ones() -> None:
    importances = permutation_importance(SignalOnly(), _split(), LAYOUT, batch_size=1024)
    by_field = {item.field: item for item in importances}
    assert [item.field for item in importances] == list(LAYOUT.field_names)
    assert by_field["signal"].auc_drop > 0.2
    assert by_field["signal"].logloss_increase > 0.1
    for ignored in ("noise", "price", "history"):
        assert by_field[ignored].auc_drop == 0.0
        assert by_field[ignored].logloss_increase == 0.0


def test_importance_is_seeded() -> None:
    first = permutation_importance(SignalOnly(), _split(), LAYOUT, seed=3, repeats=2)
    again = permutation_importance(SignalOnly(), _split(), LAYOUT, seed=3, repeats=2)
    other = permutation_importance(SignalOnly(), _split(), LAYOUT, seed=4, repeats=2)
    assert first == again
    assert first[0].auc_drop != other[0].auc_drop


def test_importance_needs_labels() -> None:
    split = _split()
    with pytest.raises(ValueError, match="needs a labelled split"):
        permutation_importance(SignalOnly(), EncodedSplit(split.features, None), LAYOUT)


def test_permute_field_moves_one_column_and_whole_sequence_rows() -> None:
    features = _split(rows=200).features
    rng = np.random.default_rng(0)
    permuted = permute_field(features, LAYOUT, "noise", rng)
    np.testing.assert_array_equal(permuted.categorical[:, 0], features.categorical[:, 0])
    assert not np.array_equal(permuted.categorical[:, 1], features.categorical[:, 1])
    assert sorted(permuted.categorical[:, 1]) == sorted(features.categorical[:, 1])
    assert features.categorical is not permuted.categorical  # the input is left alone

    sequences = permute_field(features, LAYOUT, "history", rng).sequences[0]
    original = {tuple(row) for row in features.sequences[0]}
    assert all(tuple(row) in original for row in sequences)  # rows move whole
    assert not np.array_equal(sequences, features.sequences[0])

    numeric = permute_field(features, LAYOUT, "price", rng).numeric
    assert sorted(numeric[:, 0]) == sorted(features.numeric[:, 0])
    with pytest.raises(KeyError, match="no field 'nowhere'"):
        permute_field(features, LAYOUT, "nowhere", rng)


def test_sample_rows_keeps_rows_aligned() -> None:
    split = _split(rows=500)
    split.features.numeric[:, 0] = np.arange(500)  # the row number, to find each sampled row
    sampled = sample_rows(split, 100, seed=0)
    assert sampled.num_rows == 100 and sampled.label is not None and split.label is not None
    rows = sampled.features.numeric[:, 0].astype(np.int64)
    assert len(set(rows)) == 100 and np.all(np.diff(rows) > 0)  # distinct, in row order
    np.testing.assert_array_equal(sampled.features.categorical, split.features.categorical[rows])
    np.testing.assert_array_equal(sampled.features.sequences[0], split.features.sequences[0][rows])
    np.testing.assert_array_equal(sampled.label, split.label[rows])
    assert sample_rows(split, 1_000, seed=0) is split
