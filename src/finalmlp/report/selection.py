"""The report's feature-selection section, for a run written by ``finalmlp select``: the kept
fraction of each field's values (a bar per field, dropped fields in red), and the full model
against the selected one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from finalmlp.report.html import Image, Section, Table
from finalmlp.report.plots import COLORS, _style, new_figure, png_bytes

SELECTION_FILE = "selection.json"  # finalmlp.select.run writes it


def selection_section(run_dir: Path) -> Section | None:
    """None when the run has no (readable) selection.json."""
    file = Path(run_dir) / SELECTION_FILE
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
        fields = report["fields"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    names = [row["field"] for row in fields]
    kept = np.array([row["kept"] / max(row["total"], 1) for row in fields], dtype=float)
    dropped = [bool(row["dropped"]) for row in fields]
    rows = [
        [row["field"], row["kind"], f"{row['kept']:,} / {row['total']:,}", _yes(row["dropped"])]
        for row in fields
    ]
    level = report.get("level", "value")
    target = report.get("keep_fraction_target")
    note = (
        f"finalmlp select ({level} level, OptFS): {report['kept_fraction']:.1%} of the gates "
        f"kept{'' if target is None else f' for a budget of {target:.0%}'} at sparsity "
        f"{report['sparsity']:.3g}; fields {len(report['kept_fields'])} / {len(fields)}. "
        "Dropped values are read as OOV; dropped fields are not model input."
    )
    compare = [
        ["parameters", *(f"{report['parameters'][k]:,}" for k in ("full", "selected"))],
        ["bundle bytes", *(f"{report['bundle_bytes'][k]:,}" for k in ("full", "selected"))],
    ]
    for split in ("valid", "test"):
        for metric in ("auc", "logloss"):
            compare.append(
                [
                    f"{split} {metric}",
                    *(_metric(report, k, split, metric) for k in ("full", "selected")),
                ]
            )
    image = Image(png_bytes(kept_fraction_figure(names, kept, dropped)), "kept fraction per field")
    notes = [note, *report.get("notes", [])]
    tables = [
        Table(["field", "type", "kept / total", "dropped"], rows),
        Table(["", "full", "selected"], compare),
    ]
    return Section("Feature selection", notes, tables, [image])


def kept_fraction_figure(names: Sequence[str], kept: np.ndarray, dropped: Sequence[bool]) -> Figure:
    """Horizontal bars: the kept fraction of each field's values, dropped fields in red."""
    longest = max((len(name) for name in names), default=1)
    height = max(3.0, 0.3 * len(names) + 1.5)
    figure = new_figure(6.0 + 0.08 * min(longest, 30), height, left=0.4 + 0.08 * min(longest, 30))
    axes = figure.subplots()
    colors = [COLORS[3] if gone else COLORS[0] for gone in dropped]
    positions = np.arange(len(names))[::-1]
    axes.barh(positions, kept, color=colors)
    axes.set_yticks(positions, list(names))
    axes.set_xlim(0.0, 1.05)
    _style(axes, "Kept fraction of each field's values", "kept / total (red: dropped)", "")
    return figure


def _metric(report: dict[str, Any], which: str, split: str, metric: str) -> str:
    value = report.get("metrics", {}).get(which, {}).get(split, {}).get(metric)
    return "n/a" if value is None else f"{value:.4f}"


def _yes(flag: bool) -> str:
    return "yes" if flag else ""
