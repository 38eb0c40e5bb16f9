"""The report's PNG figures: learning and ECE curves, and reliability diagrams (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from star.plots import draw_reliability, new_figure

LEARNING_CURVE, ECE_CURVE, RELIABILITY = "learning_curve.png", "ece_curve.png", "reliability.png"
#: The figures' files in the report folder, with what each shows (the report's captions).
FIGURES = ((LEARNING_CURVE, "accuracy vs labels"), (ECE_CURVE, "ECE vs labels"), (RELIABILITY, "reliability diagram"))
#: Drawn besides FIGURES when a run's labels cost other than 1 each (al.cost.unit chars or tokens).
COST_CURVE = ("cost_curve.png", "accuracy vs cumulative annotation cost")


def has_cost_axis(s: dict[str, Any]) -> bool:
    """Whether the report shows accuracy against cost: some run counts cost in a unit other than labels."""
    return any(unit != "label" for unit in s.get("cost_units", ()))


def figures(s: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The figures of the report of summary `s`: FIGURES, and COST_CURVE where it has a cost axis."""
    return (*FIGURES, COST_CURVE) if has_cost_axis(s) else FIGURES


def plot_curve(s: dict[str, Any], key: str, path: Path, ylabel: str, x: str = "labels") -> None:
    """`key` (accuracy or ece) vs labels, or vs mean cumulative annotation cost (x="cost"): mean line and
    mean ± std band per arm."""
    fig = new_figure()
    ax = fig.subplots()
    for arm in (a for a in s["arms"] if a["rounds"] and all(r[key]["mean"] is not None for r in a["rounds"])):
        xs = np.array([r["labels"] if x == "labels" else r["cost"]["mean"] for r in arm["rounds"]], dtype=float)
        mean = np.array([r[key]["mean"] for r in arm["rounds"]])
        std = np.array([r[key]["std"] for r in arm["rounds"]])
        line, = ax.plot(xs, mean, marker="o", label=f"{arm['name']} (n={arm['n_runs']})")
        ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if key == "accuracy" and s["random_final_accuracy"] is not None:
        ax.axhline(s["random_final_accuracy"], color="grey", linestyle=":", label="random, final")
    xlabel = "labels" if x == "labels" else "annotation cost"
    ax.set_xlabel(xlabel if x == "labels" else f"cumulative annotation cost ({', '.join(s['cost_units'])})")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} vs {xlabel} (mean ± std over seeds)")
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
    """Every figure of `figures(s)` into the folder `out`, from the summary `s`."""
    plot_curve(s, "accuracy", out / LEARNING_CURVE, "accuracy")
    plot_curve(s, "ece", out / ECE_CURVE, "ECE")
    plot_reliability(s, out / RELIABILITY)
    if has_cost_axis(s):
        plot_curve(s, "accuracy", out / COST_CURVE[0], "accuracy", x="cost")
