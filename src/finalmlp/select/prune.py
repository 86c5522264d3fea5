"""From binary gates to a smaller model input: the kept values and fields, pruned vocabularies,
re-encoded splits, the selected config, and the rewound weights moved into the smaller model.

A vocabulary keeps its kept values in their old order, so a value's new id is ``2 +`` its rank
among the kept ones and a dropped value is not in the vocabulary: the processor encodes it as
OOV. Encoded splits are remapped through the same old-id -> new-id table, which is exactly what
encoding the raw rows with the pruned processor gives. Hashed and quantile-bucket tables have
no vocabulary to prune: they are kept whole while any of their values is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from finalmlp.data.dataset import PreparedData
from finalmlp.data.split import EncodedSplit
from finalmlp.errors import DataError
from finalmlp.features.processor import EncodedFeatures, FeatureProcessor
from finalmlp.features.tables import FIRST_ID, OOV_ID, IdTable
from finalmlp.layout import FieldLayout
from finalmlp.models.base import CTRModel
from finalmlp.schema import ExperimentConfig, FinalMLPConfig
from finalmlp.select.gates import Gates, embedding_modules, module_tables


@dataclass
class Selection:
    """The kept set.

    Attributes:
        table_rows: per table name, the old ids its pruned table keeps (0 and 1 first).
        kept_fields: names of the fields kept, in layout order.
        fields: per field, a row of the kept/total table.
        fraction: kept gates / gates (the budget's measure).
    """

    table_rows: dict[str, np.ndarray]
    kept_fields: list[str]
    fields: list[dict[str, Any]]
    fraction: float
    notes: list[str] = field(default_factory=list)

    @property
    def dropped_fields(self) -> list[str]:
        kept = set(self.kept_fields)
        return [row["field"] for row in self.fields if row["field"] not in kept]


def binarize(gates: Gates, processor: FeatureProcessor) -> Selection:
    """The kept set of a search's final gates ``1[m > 0]``.

    Raises:
        DataError: no field is kept.
    """
    layout = processor.layout
    names = list(processor.tables_)
    kept = gates.kept().cpu().numpy()
    table_keep: dict[int, np.ndarray] = {}
    for table, size in enumerate(layout.table_sizes):
        values = np.ones(size - FIRST_ID, dtype=bool)
        if table in gates.table_start:
            start = gates.table_start[table]
            values = kept[start : start + size - FIRST_ID]
        table_keep[table] = values
    field_kept: dict[str, bool] = {}
    rows: list[dict[str, Any]] = []
    kinds = _field_kinds(layout)
    for name in layout.field_names:
        kind, field_table = kinds[name]
        gate = gates.field_index.get(name)
        if gates.level == "field":
            on = gate is None or bool(kept[gate])
            total = layout.table_sizes[field_table] - FIRST_ID if field_table is not None else 1
            kept_values = total if on else 0
        elif field_table is None:  # a numeric field: one value
            on = gate is None or bool(kept[gate])
            total, kept_values = 1, int(on)
        else:
            total = layout.table_sizes[field_table] - FIRST_ID
            kept_values = int(table_keep[field_table].sum())
            on = kept_values > 0
        field_kept[name] = on
        rows.append({"field": name, "kind": kind, "kept": kept_values, "total": total})
    notes = _keep_table_owners(processor, field_kept)
    table_rows: dict[str, np.ndarray] = {}
    for table, name in enumerate(names):
        owner_kept = any(
            field_kept[f] and kinds[f][1] == table
            for f in layout.field_names
            if kinds[f][1] is not None
        )
        if not owner_kept:
            continue
        source = processor.tables_[name]
        whole = not source.values or gates.level == "field"
        keep = np.ones_like(table_keep[table]) if whole else table_keep[table]
        if whole and gates.level == "value" and not table_keep[table].all():
            notes.append(
                f"table {name!r} has no vocabulary to prune (hashed or bucketized): kept whole"
            )
        table_rows[name] = np.concatenate(
            [np.array([0, OOV_ID]), FIRST_ID + np.flatnonzero(keep)]
        ).astype(np.int64)
    for row in rows:
        row["dropped"] = not field_kept[row["field"]]
        field_table = kinds[row["field"]][1]
        if field_table is not None:  # the rows the pruned table really has
            rows_kept = table_rows.get(names[field_table])
            row["kept"] = 0 if rows_kept is None else len(rows_kept) - FIRST_ID
    kept_fields = [n for n in layout.field_names if field_kept[n]]
    if not kept_fields:
        raise DataError(
            "the selection dropped every field (the sparsity penalty is too strong); lower "
            "select.sparsity or pass --keep-fraction"
        )
    fraction = float(kept.mean()) if kept.size else 1.0
    return Selection(table_rows, kept_fields, rows, fraction, notes)


def _field_kinds(layout: FieldLayout) -> dict[str, tuple[str, int | None]]:
    out: dict[str, tuple[str, int | None]] = {}
    for name, table in zip(layout.categorical_fields, layout.categorical_tables, strict=True):
        out[name] = ("categorical", table)
    for name in layout.numeric_fields:
        out[name] = ("numeric", None)
    for name, table in zip(layout.sequence_fields, layout.sequence_tables, strict=True):
        out[name] = ("sequence", table)
    return out


def _keep_table_owners(processor: FeatureProcessor, kept: dict[str, bool]) -> list[str]:
    """A kept field sharing another's table keeps that owner field too (its config names it)."""
    notes = []
    for feat in processor.features:
        owner = getattr(feat, "share_embedding", None)
        if owner and owner != feat.name and kept.get(feat.name) and not kept.get(owner):
            kept[owner] = True
            notes.append(f"{owner} kept: {feat.name} shares its embedding table")
    return notes


def pruned_processor(processor: FeatureProcessor, selection: Selection) -> FeatureProcessor:
    """The fitted processor without the dropped fields, its vocabularies cut to the kept values."""
    kept = set(selection.kept_fields)
    features = [f for f in processor.features if f.name in kept]
    out = FeatureProcessor(features)
    out.tables_ = {}
    for name, table in processor.tables_.items():
        if name not in selection.table_rows:
            continue
        if table.values:
            ids = selection.table_rows[name][2:]
            values = [table.values[i - FIRST_ID] for i in ids]
            out.tables_[name] = IdTable(name, values=values)
        else:
            out.tables_[name] = IdTable.from_dict(table.to_dict())
    out.numeric_stats_ = {k: v for k, v in processor.numeric_stats_.items() if k in kept}
    out.bucket_edges_ = {k: v for k, v in processor.bucket_edges_.items() if k in kept}
    return out


def _id_maps(processor: FeatureProcessor, selection: Selection) -> dict[str, np.ndarray]:
    """Per kept table, old id -> new id (dropped -> OOV)."""
    maps = {}
    for name, rows in selection.table_rows.items():
        lut = np.full(processor.tables_[name].size, OOV_ID, dtype=np.int32)
        lut[0] = 0
        lut[rows] = np.arange(len(rows), dtype=np.int32)
        maps[name] = lut
    return maps


def remap_data(
    data: PreparedData, processor: FeatureProcessor, selection: Selection
) -> PreparedData:
    """The encoded splits as the pruned processor encodes them."""
    new = pruned_processor(processor, selection)
    maps = _id_maps(processor, selection)
    layout, kept = processor.layout, set(selection.kept_fields)
    names = list(processor.tables_)
    cat = [i for i, n in enumerate(layout.categorical_fields) if n in kept]
    num = [i for i, n in enumerate(layout.numeric_fields) if n in kept]
    seq = [i for i, n in enumerate(layout.sequence_fields) if n in kept]
    splits = {}
    for split_name, split in data.splits.items():
        feats = split.features
        categorical = np.empty((feats.num_rows, len(cat)), dtype=np.int32)
        for j, i in enumerate(cat):
            lut = maps[names[layout.categorical_tables[i]]]
            categorical[:, j] = lut[feats.categorical[:, i]]
        sequences = tuple(maps[names[layout.sequence_tables[i]]][feats.sequences[i]] for i in seq)
        numeric = np.ascontiguousarray(feats.numeric[:, num])
        encoded = EncodedFeatures(categorical, numeric, sequences)
        splits[split_name] = EncodedSplit(encoded, split.label, split.group)
    return PreparedData(new, splits, False, data.seconds)


def selected_config(
    config: ExperimentConfig, selection: Selection
) -> tuple[ExperimentConfig, list[str]]:
    """The config without the dropped fields (FinalMLP gate contexts included), and notes on
    gates that lost their context."""
    kept = set(selection.kept_fields)
    features = [f for f in config.data.features if f.name in kept]
    data = config.data.model_copy(update={"features": features})
    model, notes = config.model, []
    if isinstance(model, FinalMLPConfig):
        update = {}
        for key in ("fs1_context", "fs2_context"):
            context = getattr(model, key)
            left = [c for c in context if c in kept]
            if left != context:
                update[key] = left
                lost = [c for c in context if c not in kept]
                state = "is now context-free" if not left else f"keeps context {left}"
                notes.append(
                    f"model.{key}: field(s) {lost} were dropped, so that FinalMLP gate {state}; "
                    "list them in select.keep_fields to keep them"
                )
        if update:
            model = model.model_copy(update=update)
    raw = config.model_copy(update={"data": data, "model": model}).model_dump(mode="json")
    return ExperimentConfig.model_validate(raw), notes


# ---------------------------------------------------------------------- rewound weights
def transfer_weights(
    source: CTRModel,
    target: CTRModel,
    old: FieldLayout,
    new: FieldLayout,
    table_names: Sequence[str],
    selection: Selection,
) -> dict[str, list[str]]:
    """Load ``source``'s (rewound) weights into ``target``, the model of the kept set.

    Embedding tables keep the rows of the kept values, numeric vectors those of the kept
    numeric fields; a tensor whose size along a dimension is (fields x k) keeps the kept
    fields' blocks there (the first layer of an MLP over the flat embedding, FinalMLP's gate
    outputs); other tensors of the same shape are copied. A tensor of another shape keeps its
    fresh initialisation (listed under ``reinitialised``).
    """
    old_state, new_state = source.state_dict(), target.state_dict()
    report: dict[str, list[str]] = {"rows": [], "copied": [], "sliced": [], "reinitialised": []}
    done = set()
    old_modules = dict(embedding_modules(source))
    for name, module in embedding_modules(target):
        prefix = f"{name}." if name else ""
        before = old_modules[name]
        rows = _row_map(before, module, old, new, table_names, selection)
        key = f"{prefix}table.weight"
        new_state[key] = old_state[key][rows].clone()
        report["rows"].append(key)
        done.add(key)
        if module.numeric is not None and before.numeric is not None:
            old_names = [old.numeric_fields[i] for i in before.num_cols.tolist()]
            keep = [old_names.index(new.numeric_fields[i]) for i in module.num_cols.tolist()]
            key = f"{prefix}numeric.weight"
            new_state[key] = old_state[key][keep].clone()
            report["rows"].append(key)
            done.add(key)
    kept_fields = [old.field_names.index(n) for n in new.field_names]
    for key, tensor in new_state.items():
        if key in done or key not in old_state:
            if key not in done:
                report["reinitialised"].append(key)
            continue
        value = old_state[key]
        if value.shape == tensor.shape:
            new_state[key] = value.clone()
            report["copied"].append(key)
            continue
        sliced = _field_slices(value, tensor.shape, old.num_fields, kept_fields)
        if sliced is None:
            report["reinitialised"].append(key)
        else:
            new_state[key] = sliced
            report["sliced"].append(key)
    target.load_state_dict(new_state)
    return report


def _row_map(
    before: Any,
    after: Any,
    old: FieldLayout,
    new: FieldLayout,
    table_names: Sequence[str],
    selection: Selection,
) -> torch.Tensor:
    """For each row of ``after``'s fused table, the row of ``before``'s it comes from."""
    old_start = {table_names[t]: s for t, s in module_tables(before, old)}
    new_names = [n for n in table_names if n in selection.table_rows]
    parts = []
    for table, _start in module_tables(after, new):
        name = new_names[table]
        parts.append(old_start[name] + torch.from_numpy(selection.table_rows[name]))
    if not parts:  # no table: the module's one unused row
        return torch.zeros(after.table.num_embeddings, dtype=torch.long)
    return torch.cat(parts)


def _field_slices(
    value: torch.Tensor, shape: torch.Size, num_fields: int, kept: list[int]
) -> torch.Tensor | None:
    """``value`` cut to ``shape`` by keeping the kept fields' blocks along each dimension whose
    size changed from fields x k to kept x k; None when a changed size is not of that form."""
    if value.dim() != len(shape):
        return None
    out = value
    for dim, (size_old, size_new) in enumerate(zip(value.shape, shape, strict=True)):
        if size_old == size_new:
            continue
        if size_old % num_fields or size_new != len(kept) * (size_old // num_fields):
            return None
        k = size_old // num_fields
        index = torch.tensor([f * k + j for f in kept for j in range(k)], dtype=torch.long)
        out = out.index_select(dim, index)
    return out.clone()
