"""The figures each round sends to the trackers: the learning curve so far and the round's reliability diagram.

Drawn with matplotlib on the Agg canvas (no display needed). MLflow takes the Figure itself;
TensorBoard and W&B take its pixels (`pixels`). The comparison report draws its own, pooled
over seeds (star.experiments.figures); these are one run's, round by round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from star.plots import draw_reliability, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LEARNING_CURVE, RELIABILITY = "learning_curve", "reliability"


def learning_curve(rounds: Sequence[Mapping[str, Any]]) -> Figure:
    """Accuracy and ECE against labels, over the rounds' metrics.json so far (in round order)."""
    fig = new_figure(5.0, 3.6, dpi=100)
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
    fig = new_figure(4.0, 3.8, dpi=100)
    draw_reliability(fig.subplots(), metrics.get("reliability") or [], f"round {metrics['round']}: ECE {metrics['ece']:.3f}")
    fig.tight_layout()
    return fig


def round_figures(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Figure]:
    """The figures of the last of `rounds` (every finished round up to it, in order), by name."""
    return {LEARNING_CURVE: learning_curve(rounds), RELIABILITY: reliability(rounds[-1])}


def pixels(fig: Figure) -> np.ndarray:
    """The figure rendered: (H, W, 3) uint8 RGB."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # (H, W, 4) RGBA -> (H, W, 3)
