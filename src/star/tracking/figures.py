"""The figures each round sends to the trackers: the learning curve so far and the round's reliability diagram.

Drawn with matplotlib on the Agg canvas (no display needed). MLflow takes the Figure itself;
TensorBoard and W&B take its pixels (`pixels`). The comparison report draws its own, pooled
over seeds (star.experiments.figures); these are one run's, round by round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEARNING_CURVE, RELIABILITY = "learning_curve", "reliability"


def _figure(width: float = 5.0, height: float = 3.6) -> Figure:
    """A matplotlib Figure on the Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def learning_curve(rounds: Sequence[Mapping[str, Any]]) -> Figure:
    """Accuracy and ECE against labels, over the rounds' metrics.json so far (in round order)."""
    fig = _figure()
    ax = fig.subplots()
    labels = [m["labels"] for m in rounds]
    ax.plot(labels, [m["accuracy"] for m in rounds], marker="o", label="accuracy")
    ax.plot(labels, [m["ece"] for m in rounds], marker="s", linestyle="--", label="ECE")
    ax.set_xlabel("labels")
    ax.set_ylim(0, 1)
    ax.set_title(f"learning curve, rounds 0-{rounds[-1]['round']}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def reliability(metrics: Mapping[str, Any]) -> Figure:
    """Round t's reliability diagram: accuracy per confidence bin against the diagonal."""
    fig = _figure(4.0, 3.8)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    bins = [b for b in metrics.get("reliability") or [] if b["count"]]
    ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins],
           width=[b["hi"] - b["lo"] for b in bins], edgecolor="black", alpha=0.6)
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black", markersize=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"round {metrics['round']}: ECE {metrics['ece']:.3f}", fontsize="medium")
    fig.tight_layout()
    return fig


def round_figures(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
    """The figures of the last of `rounds` (every finished round up to it, in order), by name."""
    return {LEARNING_CURVE: learning_curve(rounds), RELIABILITY: reliability(rounds[-1])}


def pixels(fig: Figure) -> np.ndarray:
    """The figure rendered: (H, W, 3) uint8 RGB."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 4) RGBA -> (H, W, 3)
