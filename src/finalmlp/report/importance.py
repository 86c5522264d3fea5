"""Permutation importance per field: how much worse the model scores when a field is shuffled.

A field's column is permuted across rows (seeded), which keeps its distribution but breaks its
link to the label and to the other fields; the drop in AUC (and the rise in logloss) is the
field's importance. A field the model ignores scores exactly 0. A sequence field is permuted as
whole rows (each row gets another row's complete sequence). Breiman 2001, Sec. 10.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from finalmlp.data.split import EncodedSplit
from finalmlp.features.processor import EncodedFeatures
from finalmlp.inference import predict_proba
from finalmlp.layout import FieldLayout
from finalmlp.metrics import task_metrics
from finalmlp.models.base import CTRModel


@dataclass(frozen=True)
class FieldImportance:
    """One field's importance, averaged over the repeats.

    Attributes:
        field: the field's name.
        auc_drop: base AUC - AUC with the field permuted (higher: more important).
        logloss_increase: logloss with the field permuted - base logloss.
    """

    field: str
    auc_drop: float
    logloss_increase: float


def permute_field(
    features: EncodedFeatures, layout: FieldLayout, field: str, rng: np.random.Generator
) -> EncodedFeatures:
    """A copy of ``features`` whose ``field`` column (or sequence rows) is permuted across rows.

    Only the permuted array is copied; the others are shared with ``features``.
    """
    layout.field_index(field)  # KeyError naming the fields when there is no such field
    order = rng.permutation(features.num_rows)
    if field in layout.categorical_fields:
        column = layout.categorical_fields.index(field)
        categorical = np.array(features.categorical, copy=True)
        categorical[:, column] = categorical[order, column]
        return replace(features, categorical=categorical)
    if field in layout.numeric_fields:
        column = layout.numeric_fields.index(field)
        numeric = np.array(features.numeric, copy=True)
        numeric[:, column] = numeric[order, column]
        return replace(features, numeric=numeric)
    index = layout.sequence_fields.index(field)
    sequences = list(features.sequences)
    sequences[index] = np.asarray(sequences[index])[order]  # whole rows move together
    return replace(features, sequences=tuple(sequences))


def permutation_importance(
    model: CTRModel,
    split: EncodedSplit,
    layout: FieldLayout,
    *,
    batch_size: int = 16384,
    repeats: int = 1,
    seed: int = 0,
) -> list[FieldImportance]:
    """Importance of every field of ``layout`` on a labelled split, in layout order. With
    several tasks the AUC drop and logloss rise are means over the tasks.

    Args:
        model: the trained model (scored in eval mode).
        split: labelled rows (the validation split).
        layout: the fields of ``split``.
        batch_size: rows per scoring batch.
        repeats: permutations per field; the drops are averaged.
        seed: seeds the permutations (field i, repeat r uses ``(seed, i, r)``).
    """
    if split.label is None:
        raise ValueError("permutation importance needs a labelled split")
    labels = np.asarray(split.label)
    tasks = [f"task{t}" for t in range(labels.shape[1])]

    def score(probs: np.ndarray) -> tuple[float, float]:
        metrics = task_metrics(labels, probs, tasks)
        return metrics["auc"], metrics["logloss"]

    base_auc, base_logloss = score(predict_proba(model, split, batch_size))
    result = []
    for index, field in enumerate(layout.field_names):
        drops, increases = [], []
        for repeat in range(repeats):
            rng = np.random.default_rng((seed, index, repeat))
            shuffled = replace(split, features=permute_field(split.features, layout, field, rng))
            auc, logloss = score(predict_proba(model, shuffled, batch_size))
            drops.append(base_auc - auc)
            increases.append(logloss - base_logloss)
        result.append(FieldImportance(field, float(np.mean(drops)), float(np.mean(increases))))
    return result
