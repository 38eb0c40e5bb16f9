"""Plotting primitives shared by the report's figures and the trackers' (matplotlib on the Agg canvas, no pyplot).

Both star.experiments.figures (pooled over seeds) and star.tracking.figures (one run, round by
round) draw reliability diagrams; the drawing lives here, once, below both layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(width: float = 7.0, height: float = 4.5, dpi: float | None = None) -> Figure:
    """A matplotlib Figure on the Agg canvas (no pyplot, no display needed); dpi None: matplotlib's default."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height)) if dpi is None else Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def draw_reliability(ax: Axes, bins: Sequence[Mapping[str, Any]], title: str) -> None:
    """A reliability diagram on `ax`: accuracy per non-empty confidence bin (bars), each bin's mean
    confidence (dots) and the diagonal of perfect calibration. Bins: dicts with lo, hi, count, accuracy, confidence."""
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    filled = [b for b in bins if b["count"]]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in filled], [b["accuracy"] for b in filled],
           width=[b["hi"] - b["lo"] for b in filled], edgecolor="black", alpha=0.6, label="accuracy")
    ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "o", color="black", markersize=3,
            label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize="medium")
