"""What target attention looks at: DIN's per-item weights for a few test rows, and the mean
weight by history position.

For each sequence field pooled by attention (``pooling: attention``), the weight the model's
activation unit gives each item of a row's history (``FeatureEmbedding.attention_weights``:
the weights the pooling sums the items with, padding excluded). Items and targets are shown by
their raw values, decoded through the fitted processor's vocabulary. Positions count back from
the most recent item: position 1 is the most recent, 2 the one before it, and so on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from finalmlp.data.dataset import EncodedSplit
from finalmlp.data.split import BatchLoader
from finalmlp.features.processor import FeatureProcessor
from finalmlp.features.tables import FIRST_ID, OOV_ID, IdTable
from finalmlp.models.attention import TargetAttention
from finalmlp.models.base import CTRModel
from finalmlp.models.layers import FeatureEmbedding
from finalmlp.report import plots
from finalmlp.report.html import Image, Section, Table

NUM_EXAMPLES = 5
EXAMPLE_SEED = 0


@dataclass(frozen=True)
class Example:
    """One row's history of a field: its items (raw values) with their weights, most recent
    first, and the target's raw value."""

    row: int
    target: str
    items: list[tuple[str, float]]


@dataclass(frozen=True)
class FieldAttention:
    """Attention of one sequence field over a split.

    Attributes:
        field, target: the sequence field and its target field.
        position_means: (L,) mean weight at position k + 1 (1 = most recent); NaN where no
            row's history reaches that far.
        position_rows: (L,) rows whose history has an item at each position.
        examples: per example row, its items and weights.
    """

    field: str
    target: str
    position_means: np.ndarray
    position_rows: np.ndarray
    examples: list[Example]


def attention_embedding(model: CTRModel) -> FeatureEmbedding | None:
    """The model's field embedding that pools a sequence by attention, else None."""
    for module in model.modules():
        if isinstance(module, FeatureEmbedding) and any(
            isinstance(p, TargetAttention) for p in module.poolers
        ):
            return module
    return None


@torch.no_grad()
def attention_summary(
    model: CTRModel,
    processor: FeatureProcessor,
    split: EncodedSplit,
    batch_size: int = 16384,
    num_examples: int = NUM_EXAMPLES,
    seed: int = EXAMPLE_SEED,
) -> list[FieldAttention]:
    """Position means over the rows of ``split`` and ``num_examples`` example rows (seeded,
    among rows with a history) for each attention-pooled field; empty without one."""
    embedding = attention_embedding(model)
    if embedding is None:
        return []
    model.eval()
    device = next(model.parameters()).device
    fields = [i for i, p in enumerate(embedding.poolers) if isinstance(p, TargetAttention)]
    weights: dict[int, list[np.ndarray]] = {i: [] for i in fields}
    for batch in BatchLoader(split, batch_size):
        batch = batch.to(device)
        for index in fields:
            found = embedding.attention_weights(batch, index)
            assert found is not None
            weights[index].append(found.double().cpu().numpy())
    layout = processor.layout
    tables = list(processor.tables_.values())
    out = []
    for index in fields:
        column = embedding.seq_cols[index]
        ids = np.asarray(split.features.sequences[column])  # (N, L), 0-padded at the end
        all_weights = np.concatenate(weights[index]) if weights[index] else np.zeros(ids.shape)
        target_column = layout.pooling(column).target
        table = tables[layout.sequence_tables[column]]
        targets = np.asarray(split.features.categorical)[:, target_column]
        rows = _example_rows(ids, num_examples, seed)
        out.append(
            FieldAttention(
                layout.sequence_fields[column],
                layout.categorical_fields[target_column],
                *_position_means(ids, all_weights),
                [_example(r, ids[r], all_weights[r], targets[r], table) for r in rows],
            )
        )
    return out


def _position_means(ids: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean weight and row count by position counted back from the most recent item."""
    present = ids > 0  # (N, L)
    lengths = present.sum(axis=1)  # (N,)
    back = lengths[:, None] - np.arange(ids.shape[1])[None, :]  # (N, L): 1 = most recent
    sums = np.zeros(ids.shape[1])
    counts = np.zeros(ids.shape[1], dtype=np.int64)
    np.add.at(sums, back[present] - 1, weights[present])
    np.add.at(counts, back[present] - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return means, counts


def _example_rows(ids: np.ndarray, count: int, seed: int) -> list[int]:
    """``count`` rows with a history (seeded), in row order."""
    candidates = np.flatnonzero((ids > 0).any(axis=1))
    if len(candidates) <= count:
        return candidates.tolist()
    chosen = np.random.default_rng(seed).choice(candidates, count, replace=False)
    return sorted(int(r) for r in chosen)


def _example(
    row: int, ids: np.ndarray, weights: np.ndarray, target: int, table: IdTable
) -> Example:
    present = np.flatnonzero(ids > 0)[::-1]  # most recent first; padding left out
    items = [(decode(table, int(ids[j])), float(weights[j])) for j in present]
    return Example(row, decode(table, int(target)), items)


def decode(table: IdTable, item_id: int) -> str:
    """The raw value of an id of ``table``: its vocabulary value, ``(unknown)`` for the OOV
    id, ``#<bucket>`` for a hashed table."""
    if item_id == OOV_ID:
        return "(unknown)"
    if table.hash_buckets is not None or not 0 <= item_id - FIRST_ID < len(table.values):
        return f"#{item_id - FIRST_ID}"
    return table.values[item_id - FIRST_ID]


def attention_section(
    summaries: Sequence[FieldAttention], num_rows: int, softmax: bool
) -> Section | None:
    """The section: per field, example rows and the mean weight by position; None without
    attention-pooled fields."""
    if not summaries:
        return None
    norm = "normalised to sum to 1 (softmax)" if softmax else "not normalised (as in DIN)"
    notes = [
        f"Weights of DIN's local activation unit, {norm}, over {num_rows:,} test rows. Items are "
        "listed most recent first; position 1 is the most recent item of a history, 2 the one "
        "before it. Padding is left out. The example rows are a seeded sample of test rows "
        "that have a history."
    ]
    tables = []
    for summary in summaries:
        rows = [
            [f"{summary.field} row {ex.row:,}", f"{summary.target} = {ex.target}",
             f"{len(ex.items)}", ", ".join(f"{item} ({weight:.3f})" for item, weight in ex.items)]
            for ex in summary.examples
        ]  # fmt: skip
        tables.append(Table(["history", "target", "items", "items (weight)"], rows))
        shown = np.flatnonzero(summary.position_rows > 0)
        tables.append(
            Table(
                [f"{summary.field}: position (1 = most recent)", "mean weight", "rows"],
                [
                    [
                        f"{k + 1}",
                        f"{summary.position_means[k]:.4f}",
                        f"{int(summary.position_rows[k]):,}",
                    ]
                    for k in shown
                ],
            )
        )
    figure = plots.position_weights_figure(
        {s.field: s.position_means for s in summaries},
        {s.field: s.position_rows for s in summaries},
    )
    image = Image(plots.png_bytes(figure), "mean attention weight by history position")
    return Section("Attention over histories", notes, tables, [image])
