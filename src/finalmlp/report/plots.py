"""Report figures: pure functions from arrays to a matplotlib Figure, rendered to PNG bytes.

No pyplot: each figure is a ``matplotlib.figure.Figure`` with its own Agg canvas, so nothing
leaks into (or depends on) pyplot's global state or the configured backend.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from finalmlp.report.curves import Reliability

DPI = 100
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def new_figure(
    width: float = 6.0,
    height: float = 4.0,
    *,
    left: float = 0.8,
    bottom: float = 0.65,
    space: float = 0.3,
) -> Figure:
    """A figure with fixed margins in inches (a layout engine would triple the render time)."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(
        left=left / width,
        right=1 - 0.2 / width,
        bottom=bottom / height,
        top=1 - 0.4 / height,
        wspace=space,
        hspace=space,
    )
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure as a PNG image."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _style(axes: Axes, title: str, x_label: str, y_label: str) -> None:
    axes.set_title(title)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(alpha=0.3)


def history_figure(
    x: np.ndarray,
    x_label: str,
    train_loss: np.ndarray,
    valid_logloss: np.ndarray,
    valid_auc: np.ndarray,
) -> Figure:
    """Loss (train, valid) and valid AUC per validation; arrays of equal length."""
    figure = new_figure(10.0, 4.0)
    loss_axes, auc_axes = figure.subplots(1, 2)
    loss_axes.plot(x, train_loss, marker="o", label="train loss (BCE)")
    loss_axes.plot(x, valid_logloss, marker="o", label="valid logloss")
    _style(loss_axes, "Loss", x_label, "logloss")
    loss_axes.legend()
    auc_axes.plot(x, valid_auc, marker="o", color=COLORS[2], label="valid AUC")
    _style(auc_axes, "AUC", x_label, "AUC")
    auc_axes.legend()
    return figure


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float) -> Figure:
    figure = new_figure(5.0, 4.5)
    axes = figure.subplots()
    axes.plot(fpr, tpr, label=f"model (AUC {auc:.4f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    _style(axes, "ROC curve (test)", "false positive rate", "true positive rate")
    axes.set(xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    return figure


def precision_recall_figure(
    precision: np.ndarray, recall: np.ndarray, average_precision: float, base_rate: float
) -> Figure:
    figure = new_figure(5.0, 4.5)
    axes = figure.subplots()
    axes.step(recall, precision, where="post", label=f"model (AP {average_precision:.4f})")
    axes.axhline(base_rate, linestyle="--", color="grey", label=f"base rate {base_rate:.3f}")
    _style(axes, "Precision-recall curve (test)", "recall", "precision")
    axes.set(xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower left")
    return figure


def reliability_figure(bins: Reliability) -> Figure:
    """Fraction of positives against mean prediction per bin, with the rows per bin below."""
    figure = new_figure(5.0, 5.5, space=0.08)
    curve_axes, count_axes = figure.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = bins.counts > 0
    curve_axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    curve_axes.plot(
        bins.mean_pred[filled], bins.frac_pos[filled], marker="o", label=f"ECE {bins.ece:.4f}"
    )
    _style(curve_axes, "Reliability diagram (test)", "", "fraction of positives")
    curve_axes.set(xlim=(0, 1), ylim=(0, 1.01))
    curve_axes.legend(loc="upper left")
    widths = np.diff(bins.edges)[filled]
    count_axes.bar(
        bins.edges[:-1][filled], bins.counts[filled], width=widths, align="edge", edgecolor="white"
    )
    count_axes.set_yscale("log")
    _style(count_axes, "", "mean predicted probability", "rows")
    return figure


def score_histogram_figure(probs: np.ndarray, labels: np.ndarray, num_bins: int = 50) -> Figure:
    """Density of the predicted probability for negatives and positives."""
    figure = new_figure(6.0, 4.0)
    axes = figure.subplots()
    edges = np.linspace(0.0, 1.0, num_bins + 1).tolist()
    is_positive = np.asarray(labels) == 1
    for value, name, color in ((False, "label 0", COLORS[0]), (True, "label 1", COLORS[1])):
        rows = probs[is_positive == value]
        if len(rows):
            axes.hist(rows, bins=edges, density=True, alpha=0.55, color=color, label=name)
    _style(axes, "Predicted probability by label (test)", "predicted probability", "density")
    axes.legend()
    return figure


def gates_figure(field_names: Sequence[str], gates: Mapping[str, np.ndarray]) -> Figure:
    """Grouped bars: one bar per field for each stream (one bar container per stream)."""
    num_fields, num_streams = len(field_names), len(gates)
    longest = max((len(name) for name in field_names), default=1)
    bottom = 0.7 + 0.06 * min(longest, 30)  # room for the rotated field names
    figure_width = max(6.0, 0.45 * num_fields * num_streams + 2.0)
    figure = new_figure(figure_width, 3.5 + bottom, bottom=bottom)
    axes = figure.subplots()
    positions = np.arange(num_fields)
    width = 0.8 / max(num_streams, 1)
    for stream, (name, values) in enumerate(gates.items()):
        offset = (stream - (num_streams - 1) / 2) * width
        axes.bar(positions + offset, values, width=width, label=name, color=COLORS[stream % 4])
    axes.axhline(1.0, linestyle="--", color="grey", linewidth=1)
    axes.set_xticks(positions, field_names, rotation=45, ha="right")
    _style(axes, "Mean gate value per field (valid)", "field", "mean gate value (1 = neutral)")
    # Headroom above the tallest bar holds the legend in one row: it never covers a bar.
    tallest = max([1.0, *(float(np.max(v)) for v in gates.values() if len(v))])
    axes.set_ylim(0.0, tallest * 1.3)
    axes.legend(loc="upper center", ncol=max(num_streams, 1), frameon=False)
    return figure


def importance_figure(field_names: Sequence[str], auc_drops: np.ndarray) -> Figure:
    """Horizontal bars of the AUC drop per field, largest on top."""
    order = np.argsort(auc_drops)
    longest = max((len(name) for name in field_names), default=1)
    height = max(3.0, 0.3 * len(field_names) + 1.5)
    figure = new_figure(6.0 + 0.08 * min(longest, 30), height, left=0.4 + 0.08 * min(longest, 30))
    axes = figure.subplots()
    axes.barh(np.asarray(field_names)[order], np.asarray(auc_drops)[order], color=COLORS[0])
    axes.axvline(0.0, color="grey", linewidth=1)
    _style(axes, "Permutation importance (valid)", "AUC drop when permuted", "")
    return figure


def expert_gates_figure(
    experts: Sequence[str], tasks: Sequence[str], gate_weights: np.ndarray
) -> Figure:
    """Heat map of each task's mean gate weight (rows) on each expert (columns)."""
    longest = max((len(name) for name in experts), default=1)
    bottom = 0.7 + 0.06 * min(longest, 30)
    figure = new_figure(max(6.0, 0.5 * len(experts) + 2.5), 1.0 + 0.5 * len(tasks) + bottom,
                        bottom=bottom)  # fmt: skip
    axes = figure.subplots()
    image = axes.imshow(gate_weights, aspect="auto", cmap="viridis", vmin=0.0)
    axes.set_xticks(np.arange(len(experts)), experts, rotation=45, ha="right")
    axes.set_yticks(np.arange(len(tasks)), tasks)
    for (row, col), value in np.ndenumerate(gate_weights):
        axes.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
    figure.colorbar(image, ax=axes, label="mean gate weight")
    axes.set_title("Mean gate weight per task and expert (valid)", fontsize=10)
    return figure


def position_weights_figure(
    means: Mapping[str, np.ndarray], rows: Mapping[str, np.ndarray]
) -> Figure:
    """Mean attention weight by history position (1 = most recent), one line per field;
    positions no row reaches are left out."""
    figure = new_figure(6.0, 3.8)
    axes = figure.subplots()
    for index, (field, values) in enumerate(means.items()):
        shown = np.flatnonzero(rows[field] > 0)
        axes.plot(shown + 1, values[shown], marker="o", markersize=3, label=field,
                  color=COLORS[index % 4])  # fmt: skip
    _style(axes, "Mean attention weight by history position (test)",
           "position (1 = most recent item)", "mean weight")  # fmt: skip
    axes.legend(frameon=False)
    return figure
