"""Stopping rules: after each round, from the rounds so far, whether to stop paying for labels.

Each rule maps a `History` (per-round values, index = round) to a `Verdict` (value, holds):

- kappa: stabilising predictions (Bloodgood & Vijay-Shanker 2009), as small-text's KappaAverage:
  Cohen's kappa between successive models' predictions on a fixed stop set; holds once the mean of
  the last `window` kappas is >= the threshold (value: None until `window` pairs exist);
- uncertainty: overall uncertainty (Zhu et al. 2008): the mean uncertainty of the latest model's
  predictions on the stop set is <= the threshold;
- accuracy: the latest test accuracy is >= the target (reads the test set: simulation, or a labelled dev set);
- budget: the total cost so far is >= the budget, or what is left of it cannot pay for one more label.

Pure functions of values: no model, no files.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Rule names `al.stop.rules` accepts, in the order they are reported.
RULES = ("kappa", "uncertainty", "accuracy", "budget")


@dataclass(frozen=True)
class Verdict:
    """One rule after one round: its value (None: not computable yet) and whether it holds."""

    value: float | None
    holds: bool

    def as_json(self) -> dict[str, float | bool | None]:
        return {"value": self.value, "holds": self.holds}


@dataclass(frozen=True)
class History:
    """What the rules read of rounds 0..t (index = round); a rule reads only the lists it needs."""

    accuracy: Sequence[float] = ()  # test accuracy of each model
    labels: Sequence[int] = ()  # labels after each round
    cost: Sequence[float] = ()  # total annotation cost after each round (al.cost.unit)
    predictions: Sequence[Sequence[Hashable | None]] = field(default_factory=tuple)  # stop-set answers per model
    uncertainty: Sequence[float] = ()  # mean stop-set uncertainty of each model


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float:
    """Cohen's kappa of two raters' categorical labels (None is a category of its own); 1.0 when they agree
    on every item (also where chance agreement is 1, which the formula leaves undefined, as small-text)."""
    if len(a) != len(b) or not len(a):
        raise ValueError(f"kappa needs two non-empty label vectors of one length, got {len(a)} and {len(b)}")
    if list(a) == list(b):
        return 1.0
    cats = {c: i for i, c in enumerate(dict.fromkeys([*a, *b]))}
    table = np.zeros((len(cats), len(cats)))  # (C, C) agreement table: rows a, columns b
    np.add.at(table, ([cats[x] for x in a], [cats[y] for y in b]), 1.0)
    table /= table.sum()
    observed = float(np.trace(table))
    chance = float(table.sum(axis=1) @ table.sum(axis=0))  # sum_c p_a(c) p_b(c)
    return (observed - chance) / (1.0 - chance)


@dataclass(frozen=True)
class KappaRule:
    """Stabilising predictions: mean kappa of the last `window` successive pairs >= `kappa`."""

    kappa: float = 0.99
    window: int = 3
    name = "kappa"

    def __call__(self, h: History) -> Verdict:
        preds = h.predictions
        if len(preds) < self.window + 1:
            return Verdict(None, False)
        kappas = [cohen_kappa(preds[s - 1], preds[s]) for s in range(len(preds) - self.window, len(preds))]
        value = float(np.mean(kappas))
        return Verdict(value, value >= self.kappa)


@dataclass(frozen=True)
class UncertaintyRule:
    """Overall uncertainty: the latest model's mean stop-set uncertainty <= `threshold`."""

    threshold: float
    name = "uncertainty"

    def __call__(self, h: History) -> Verdict:
        if not h.uncertainty:
            return Verdict(None, False)
        value = float(h.uncertainty[-1])
        return Verdict(value, value <= self.threshold)


@dataclass(frozen=True)
class AccuracyRule:
    """Target accuracy: the latest test accuracy >= `threshold`."""

    threshold: float
    name = "accuracy"

    def __call__(self, h: History) -> Verdict:
        if not h.accuracy:
            return Verdict(None, False)
        value = float(h.accuracy[-1])
        return Verdict(value, value >= self.threshold)


@dataclass(frozen=True)
class BudgetRule:
    """Budget: total cost >= `budget`, or what is left is less than one more label at the mean cost per label so
    far (1 for labels). Until then a round fits its batch to what is left (al.cost), so the budget is spent."""

    budget: float
    name = "budget"

    def __call__(self, h: History) -> Verdict:
        if not h.cost:
            return Verdict(None, False)
        total = float(h.cost[-1])
        per_label = total / h.labels[-1] if h.labels and h.labels[-1] else 1.0
        return Verdict(total, total >= self.budget or self.budget - total < per_label)


Rule = Callable[[History], Verdict]


def evaluate(rules: Sequence[Rule], history: History) -> dict[str, Verdict]:
    """Every rule's verdict on `history`, by rule name, in the rules' order."""
    return {rule.name: rule(history) for rule in rules}  # type: ignore[attr-defined]


def first_holding(verdicts: dict[str, Verdict]) -> str | None:
    """The first rule (in the configured order) that holds, or None."""
    return next((name for name, v in verdicts.items() if v.holds), None)
