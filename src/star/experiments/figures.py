"""The report's PNG figures: learning and ECE curves, and reliability diagrams (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from star.plots import draw_reliability, new_figure

LEARNING_CURVE, ECE_CURVE, RELIABILITY = "learning_curve.png", "ece_curve.png", "reliability.png"
#: The figures' files in the report folder, with what each shows (the report's captions).
FIGURES = ((LEARNING_CURVE, "accuracy vs labels"), (ECE_CURVE, "ECE vs labels"), (RELIABILITY, "reliability diagram"))


def plot_curve(s: dict[str, Any], key: str, path: Path, ylabel: str) -> None:
    """`key` (accuracy or ece) vs labels: mean line and mean ± std band per arm."""
    fig = new_figure()
    ax = fig.subplots()
    for arm in (a for a in s["arms"] if a["rounds"]):
        x = np.array([r["labels"] for r in arm["rounds"]], dtype=float)
        mean = np.array([r[key]["mean"] for r in arm["rounds"]])
        std = np.array([r[key]["std"] for r in arm["rounds"]])
        line, = ax.plot(x, mean, marker="o", label=f"{arm['name']} (n={arm['n_runs']})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if key == "accuracy" and s["random_final_accuracy"] is not None:
        ax.axhline(s["random_final_accuracy"], color="grey", linestyle=":", label="random, final")
    ax.set_xlabel("labels")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} vs labels (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_reliability(s: dict[str, Any], path: Path) -> None:
    """One reliability diagram per arm: pooled accuracy per confidence bin against the diagonal."""
    arms = [a for a in s["arms"] if a["reliability"]] or [None]
    cols = min(3, len(arms))
    rows = (len(arms) + cols - 1) // cols
    fig = new_figure(4.0 * cols, 3.8 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, arm in zip(axes, arms):
        if arm is None:
            draw_reliability(ax, [], "no reliability bins recorded")
            continue
        draw_reliability(ax, arm["reliability"]["bins"], f"{arm['name']}: ECE {arm['reliability']['ece']:.3f}")
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_figures(s: dict[str, Any], out: Path) -> None:
    """Every figure of FIGURES into the folder `out`, from the summary `s`."""
    plot_curve(s, "accuracy", out / LEARNING_CURVE, "accuracy")
    plot_curve(s, "ece", out / ECE_CURVE, "ECE")
    plot_reliability(s, out / RELIABILITY)
