"""Annotation cost: what a label costs, cost-aware ranking and the budget's prefix (pure numpy).

A label costs 1 ("label"), or a length of its answer ("chars": characters of the answer as given;
"tokens": the model tokenizer's tokens of the answer's training target). The loop measures the
lengths (it holds the tokenizer and the labels) and passes them in; nothing here reads text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

CostUnit = Literal["label", "chars", "tokens"]
COST_UNITS: tuple[CostUnit, ...] = ("label", "chars", "tokens")
#: Added to the min-max normalised score before dividing by cost: the least uncertain candidate (score 0)
#: still ranks by its cost instead of tying with every other zero.
SCORE_EPS = 1e-3
#: The smallest estimated cost of a candidate (an empty model answer still costs its labeller something).
MIN_ESTIMATE = 1.0


def label_costs(unit: CostUnit, lengths: Sequence[float] | np.ndarray) -> np.ndarray:
    """(n,) cost of each label: 1 each for "label", else its answer's length in `unit` (chars or tokens)."""
    lengths = np.asarray(lengths, dtype=np.float64)  # (n,)
    return np.ones_like(lengths) if unit == "label" else lengths


def estimated_costs(unit: CostUnit, n: int, lengths: Sequence[float] | np.ndarray | None,
                    fallback: float) -> np.ndarray:
    """(n,) estimated cost of each candidate before it is labelled, at least MIN_ESTIMATE.

    "label": 1 each. chars / tokens: `lengths` (n,), the lengths of the model's own answers where the
    scoring pass produced them, else `fallback` for every candidate (e.g. the mean cost of the labels so far).
    """
    if unit == "label":
        return np.ones(n)
    est = np.full(n, float(fallback)) if lengths is None else np.asarray(lengths, dtype=np.float64)  # (n,)
    if est.shape != (n,):
        raise ValueError(f"estimated_costs needs {n} lengths, got shape {est.shape}")
    return np.maximum(est, MIN_ESTIMATE)


def per_cost(scores: np.ndarray, cost: np.ndarray, eps: float = SCORE_EPS) -> np.ndarray:
    """(n,) cost-aware ranking values: (minmax(scores) + eps) / cost, score per unit of estimated cost.

    Min-max first, so any strategy's scores (signed, or not in [0, 1]) become non-negative and the ranking
    among equal costs is the strategy's own; `eps` keeps a zero score ranked by its cost.
    """
    scores, cost = np.asarray(scores, dtype=np.float64), np.asarray(cost, dtype=np.float64)  # (n,) each
    if cost.shape != scores.shape or (cost <= 0).any():
        raise ValueError("per_cost needs one positive cost per score")
    span = np.ptp(scores) if scores.size else 0.0
    unit = np.zeros_like(scores) if span <= 0 else (scores - scores.min()) / span  # strategies.minmax (no cycle)
    return (unit + eps) / cost


def budget_prefix(costs_in_order: Sequence[float] | np.ndarray, remaining: float) -> int:
    """How many candidates, taken in rank order with these estimated costs (k,), fit in `remaining`.

    The longest prefix whose cumulative cost is at most `remaining`, but at least 1 while any budget
    remains (> 0), so a run spends its budget; 0 when none remains.
    """
    if remaining <= 0:
        return 0
    cumulative = np.cumsum(np.asarray(costs_in_order, dtype=np.float64))  # (k,)
    fits = int(np.searchsorted(cumulative, remaining * (1 + 1e-12), side="right"))
    return max(fits, 1) if len(cumulative) else 0
