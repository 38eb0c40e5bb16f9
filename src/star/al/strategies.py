"""Query strategies: pure functions from score arrays to a ranking (no model, no strings in the loop).

Each strategy says which uncertainty `measure` it needs ('pe' or 'me', or None for random)
and whether it needs the base model's score; `rank_scores` turns arrays over the current
pool into the values ranked on. Arrays are (n,) over the scored pool, aligned with its ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

Measure = Literal["pe", "me"]


def minmax(x: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1] over the current pool; a constant array becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    span = x.max() - x.min() if x.size else 0.0
    return np.zeros_like(x) if span <= 0 else (x - x.min()) / span


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores; ties go to the lower index (stable, deterministic)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


@dataclass(frozen=True)
class ScoreInputs:
    """What a strategy may look at: base / tuned-model scores (n,), lambda(t) and an RNG."""

    u_base: np.ndarray | None
    u_full: np.ndarray | None
    lambda_t: float
    rng: np.random.Generator
    n: int


class Strategy:
    """Base class: subclasses set `measure`, `uses_base`, `uses_full` and implement `score`."""

    name: ClassVar[str]
    measure: ClassVar[Measure | None] = None
    uses_base: ClassVar[bool] = False
    uses_full: ClassVar[bool] = False

    def score(self, x: ScoreInputs) -> np.ndarray:
        raise NotImplementedError

    def select(self, x: ScoreInputs, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores ranked on (n,), indices of the k selected)."""
        scores = self.score(x)
        return scores, top_k(scores, k)


class RandomStrategy(Strategy):
    """Uniform random draw (the baseline that plain uncertainty sampling often loses to)."""

    name = "random"

    def score(self, x: ScoreInputs) -> np.ndarray:
        return x.rng.random(x.n)


class UncertaintyStrategy(Strategy):
    """The tuned model's normalised uncertainty."""

    uses_full = True

    def score(self, x: ScoreInputs) -> np.ndarray:
        return minmax(x.u_full)


class SubtractStrategy(Strategy):
    """norm(u_full) - norm(u_base): what tuning left uncertain relative to the base (release baseline)."""

    uses_base = uses_full = True

    def score(self, x: ScoreInputs) -> np.ndarray:
        return minmax(x.u_full) - minmax(x.u_base)


class DynamicStrategy(Strategy):
    """STAR: lambda(t) * norm(u_base) + (1 - lambda(t)) * norm(u_full)."""

    uses_base = uses_full = True

    def score(self, x: ScoreInputs) -> np.ndarray:
        return x.lambda_t * minmax(x.u_base) + (1.0 - x.lambda_t) * minmax(x.u_full)


def _named(base: type[Strategy], name: str, measure: Measure) -> type[Strategy]:
    return type(name.replace("-", "_").title(), (base,), {"name": name, "measure": measure})


STRATEGIES: dict[str, type[Strategy]] = {"random": RandomStrategy}
for _measure, _prefix in (("me", "entropy"), ("pe", "pe")):
    STRATEGIES[_prefix] = _named(UncertaintyStrategy, _prefix, _measure)
    STRATEGIES[f"{_prefix}-subtract"] = _named(SubtractStrategy, f"{_prefix}-subtract", _measure)
    STRATEGIES[f"{_prefix}-dynamic"] = _named(DynamicStrategy, f"{_prefix}-dynamic", _measure)


def get_strategy(name: str) -> Strategy:
    """The strategy registered under `name`."""
    return STRATEGIES[name]()
