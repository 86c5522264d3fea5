"""A proposed config and how it is written out: the result type of ``finalmlp schema infer``
(:class:`InferredSchema`), per-column statistics, the model/train skeleton sized to the data
and the commented YAML. Shared by the text/Parquet inference (``features.infer``) and the
LIBSVM/FFM one (``features.infer_libsvm``), below both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import yaml

SMALL_ROWS = 50_000  # fewer training rows: a smaller model is proposed
LARGE_ROWS = 1_000_000  # more: a lighter embedding L2


@dataclass(frozen=True)
class InferredSchema:
    """A proposed data config with what was seen in the sample.

    Attributes:
        data: the ``data:`` section (validates with :func:`finalmlp.config.parse_config`).
        stats: per column of the file: distinct, null_fraction, examples, and a ``note``
            saying why the column became what it is (or why it was dropped).
        notes: file-level remarks (sample size, header guess, recipe hints).
    """

    data: dict[str, Any]
    stats: dict[str, dict[str, Any]]
    notes: tuple[str, ...] = ()
    train_rows: int | None = None  # rows of the train file (None: unknown)

    def config(self) -> dict[str, Any]:
        """The whole proposed config: ``data``, and ``model``/``train`` sized to the data."""
        return {"data": self.data, **config_skeleton(self.train_rows)}

    def to_yaml(self) -> str:
        """The commented YAML config for a user to review."""
        return render_yaml(
            self.data, self.stats, notes=self.notes, skeleton=config_skeleton(self.train_rows)
        )


def column_stats(frame: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per column: ``distinct`` (non-empty values), ``null_fraction`` and up to 3 ``examples``.

    Empty and whitespace-only strings count as nulls.
    """
    stats: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        values = clean_text(frame[name])
        present = values.drop_nulls()
        stats[name] = {
            "distinct": present.n_unique(),
            "null_fraction": values.null_count() / frame.height if frame.height else 0.0,
            "examples": present.unique(maintain_order=True).head(3).to_list(),
        }
    return stats


def render_yaml(
    data_config: dict[str, Any],
    stats: dict[str, dict[str, Any]] | None = None,
    *,
    notes: Sequence[str] = (),
    skeleton: dict[str, Any] | None = None,
) -> str:
    """YAML text for a whole config: ``data:`` as given plus a ``model:``/``train:`` skeleton.

    Each feature (and the label) is preceded by a comment with its column's stats when
    ``stats`` has them; columns in ``stats`` that the config does not use are listed as dropped.
    The text parses back with ``yaml.safe_load`` to exactly ``data_config`` under ``data``.
    """
    stats = stats or {}
    lines = ["# Proposed by `finalmlp schema infer`: review every line before training."]
    lines += [_comment(note) for note in notes]
    lines.append("data:")
    label = data_config.get("label")
    for key, value in data_config.items():
        if key == "features":
            continue
        if key == "label" and label in stats:
            lines.append("  " + _comment(_describe(f"label {label}", stats[label])))
        lines.append(_dump({key: value}, "  ", flow_leaves=isinstance(value, list | dict)))
    lines.append("  features:")
    used = {label}
    for feature in data_config.get("features", []):
        column = feature.get("source") or feature["name"]
        used.add(column)
        if column in stats:
            lines.append("    " + _comment(_describe(column, stats[column])))
        lines.append(_dump([feature], "    ", flow_leaves=True))
    for column, column_stat in stats.items():
        if column not in used:
            lines.append("  " + _comment(_describe(f"dropped {column}", column_stat)))
    lines.append(_dump(skeleton or config_skeleton(), ""))
    return "\n".join(lines) + "\n"


def config_skeleton(train_rows: int | None = None) -> dict[str, Any]:
    """The ``model:`` and ``train:`` sections proposed beside an inferred ``data:``, sized to
    the training rows (None: unknown, the defaults).

    - ``batch_size``: the largest power of 2 giving at least 40 steps per epoch, from 256 to
      4096 (4096 on Frappe's 203k rows; with 4096 on 10k rows an epoch is 2 steps and the
      model stops before it learns: docs/reliability.md);
    - below 50k rows a FinalMLP of half the width (fewer parameters than rows to fit);
    - from 1M rows ``embedding_l2: 1e-5``, BARS's Criteo/Avazu setting: the per-model
      default (0.05, Frappe's) penalises whole tables of millions of ids every step.

    ``learning_rate`` and (below 1M rows) ``embedding_l2`` are left to the model's defaults
    (docs/models.md), so another ``model.name`` takes its own.
    """
    model: dict[str, Any] = {"name": "finalmlp", "embedding_dim": 10}
    train: dict[str, Any] = {"batch_size": 4096, "patience": 2}
    if train_rows is None:
        return {"model": model, "train": train}
    batch = 256
    while batch * 2 <= min(4096, train_rows / 40):
        batch *= 2
    train["batch_size"] = batch
    if train_rows < SMALL_ROWS:
        model.update(
            mlp1={"hidden_units": [200], "dropout": 0.4, "batch_norm": True},
            mlp2={"hidden_units": [50], "dropout": 0.4, "batch_norm": True},
            fs_hidden_units=[200],
        )
    if train_rows >= LARGE_ROWS:
        train["embedding_l2"] = 1e-5
    return {"model": model, "train": train}


def clean_text(raw: pl.Series) -> pl.Series:
    """Text values with surrounding whitespace removed; empty strings become null."""
    return raw.cast(pl.Utf8).str.strip_chars().replace("", None)


def _describe(title: str, stat: dict[str, Any]) -> str:
    examples = ", ".join(repr(_truncate(str(v))) for v in stat.get("examples", []))
    text = f"{title}: {stat.get('distinct', 0):,} distinct, {stat.get('null_fraction', 0.0):.1%}"
    text += f" empty, e.g. {examples}" if examples else " empty"
    return f"{text}; {stat['note']}" if stat.get("note") else text


def _truncate(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _comment(text: str) -> str:
    return "# " + " ".join(text.splitlines())


def _dump(value: Any, indent: str, *, flow_leaves: bool = False) -> str:
    """YAML of ``value``, each line indented; with ``flow_leaves`` a collection holding only
    scalars (a feature, the column list) is written on one line, ``{...}`` or ``[...]``."""
    text = yaml.safe_dump(
        value,
        default_flow_style=None if flow_leaves else False,
        sort_keys=False,
        width=2**31 - 1,
        allow_unicode=True,
    )
    return "\n".join(indent + line for line in text.rstrip("\n").splitlines())
