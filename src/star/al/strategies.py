"""Query strategies: pure functions from score arrays to a ranking (no model, no strings in the loop).

Each strategy says which uncertainty `measure` it needs ('pe' or 'me', the MC passes' disagreement
'bald' or 'pe-spread', or None for random, k-center and idds), which one the base model is scored with (`base_measure`)
and whether it needs the base model's score; `rank_scores` turns arrays over the current
pool into the values ranked on. Arrays are (n,) over the scored pool, aligned with its ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from star.al.cost import per_cost
from star.al.diversity import IDDS_LAMBDA, diverse_top_k, idds, k_center_greedy
from star.al.uncertainty import TOTAL_MEASURE

Measure = Literal["pe", "me", "bald", "pe-spread"]


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
    """What a strategy may look at: base / tuned-model scores (n,), lambda(t) and an RNG; diversity
    strategies also the candidates' and the labelled set's embeddings; cost-aware ranking each
    candidate's estimated annotation cost."""

    u_base: np.ndarray | None
    u_full: np.ndarray | None
    lambda_t: float
    rng: np.random.Generator
    n: int
    embeddings: np.ndarray | None = None  # (n, d) the candidates', aligned with u_base / u_full
    labelled_embeddings: np.ndarray | None = None  # (m, d) the examples labelled before this round
    cost: np.ndarray | None = None  # (n,) estimated annotation cost (> 0), given with al.cost.aware: rank per cost


class Strategy:
    """Base class: subclasses set `measure`, `uses_base`, `uses_full` and implement `score`."""

    name: ClassVar[str]
    measure: ClassVar[Measure | None] = None
    base_measure: ClassVar[Measure | None] = None  # u_base's: `measure`, or its one-pass stand-in (TOTAL_MEASURE)
    uses_base: ClassVar[bool] = False
    uses_full: ClassVar[bool] = False
    uses_embeddings: ClassVar[bool] = False  # needs ScoreInputs.embeddings / labelled_embeddings
    ranks_per_cost: ClassVar[bool] = True  # al.cost.aware divides its scores by the candidates' costs

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Unless a subclass sets `base_measure`, it is `measure`'s: the base model has one pass, so BALD and PE
        spread (disagreement between passes, 0 there) stand in as ME and PE."""
        super().__init_subclass__(**kwargs)
        if "base_measure" not in cls.__dict__:
            cls.base_measure = TOTAL_MEASURE.get(cls.measure, cls.measure)

    def score(self, x: ScoreInputs) -> np.ndarray:
        raise NotImplementedError

    def select(self, x: ScoreInputs, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores ranked on (n,), indices of the k selected); with `x.cost`, score per unit of cost (al/cost.py)."""
        scores = self.score(x) if x.cost is None else per_cost(self.score(x), x.cost)
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
for _measure in ("bald", "pe-spread"):  # disagreement of the tuned model's K MC passes (al/uncertainty.py)
    STRATEGIES[_measure] = _named(UncertaintyStrategy, _measure, _measure)
    STRATEGIES[f"{_measure}-dynamic"] = _named(DynamicStrategy, f"{_measure}-dynamic", _measure)


# --- diversity (al/diversity.py): embeddings are the base model's mean-pooled prompt hidden states ------------

def _embeddings(x: ScoreInputs, name: str) -> np.ndarray:
    """The candidates' embeddings (n, d), or a clear error naming the strategy."""
    if x.embeddings is None:
        raise ValueError(f"strategy {name!r} needs the candidates' embeddings (ScoreInputs.embeddings), got none")
    if len(x.embeddings) != x.n:
        raise ValueError(f"strategy {name!r}: {len(x.embeddings)} embeddings for {x.n} candidates")
    return x.embeddings


def _by_score(scores: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """The picks highest score first, ties by index: the order a resumed round reads back from scores.jsonl."""
    return picks[np.lexsort((picks, -scores[picks]))]


class KCenterStrategy(Strategy):
    """Coreset: k-center greedy (1 - cos) from the labelled set. Scores: each candidate's distance to the
    labelled set and the earlier picks when picked (the rest: after the batch). No per-cost ranking."""

    name = "k-center"
    uses_embeddings = True
    ranks_per_cost = False

    def score(self, x: ScoreInputs) -> np.ndarray:
        return k_center_greedy(_embeddings(x, self.name), x.labelled_embeddings, 0)[0]

    def select(self, x: ScoreInputs, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, picks = k_center_greedy(_embeddings(x, self.name), x.labelled_embeddings, k)
        return scores, _by_score(scores, picks)


class IddsStrategy(Strategy):
    """IDDS, greedy: typical of the pool, unlike the labelled set. Scores: each candidate's IDDS score when
    picked (the rest: after the batch). `lam` (al.idds_lambda, default IDDS_LAMBDA): the weight of typicality
    against novelty. No per-cost ranking."""

    name = "idds"
    uses_embeddings = True
    ranks_per_cost = False

    def __init__(self, lam: float = IDDS_LAMBDA) -> None:
        self.lam = lam

    def score(self, x: ScoreInputs) -> np.ndarray:
        return idds(_embeddings(x, self.name), x.labelled_embeddings, 0, self.lam)[0]

    def select(self, x: ScoreInputs, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, picks = idds(_embeddings(x, self.name), x.labelled_embeddings, k, self.lam)
        return scores, _by_score(scores, picks)


class DiverseStrategy(Strategy):
    """The hybrid "N+diverse": N's ranking (per cost too, with al.cost.aware) spread over k k-means clusters of the
    embeddings: each cluster's top candidate, topped up from N's ranking. Scores: N's."""

    inner: ClassVar[type[Strategy]]
    uses_embeddings = True

    def score(self, x: ScoreInputs) -> np.ndarray:
        return self.inner().score(x)

    def select(self, x: ScoreInputs, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = self.inner().select(x, x.n)[0]
        return scores, diverse_top_k(scores, _embeddings(x, self.name), k, x.rng)


def _diverse(inner: type[Strategy]) -> type[Strategy]:
    flags = {f: getattr(inner, f) for f in ("measure", "base_measure", "uses_base", "uses_full")}
    return type(f"{inner.__name__}Diverse", (DiverseStrategy,), {"name": f"{inner.name}+diverse", "inner": inner, **flags})


STRATEGIES["k-center"] = KCenterStrategy
STRATEGIES["idds"] = IddsStrategy
for _name, _cls in list(STRATEGIES.items()):  # keep last: every uncertainty strategy above gets its hybrid
    if _cls.measure is not None:
        STRATEGIES[f"{_name}+diverse"] = _diverse(_cls)


def get_strategy(name: str, idds_lambda: float = IDDS_LAMBDA) -> Strategy:
    """The strategy registered under `name` (`idds_lambda`: IDDS's lambda, used by `idds` only)."""
    cls = STRATEGIES[name]
    return cls(lam=idds_lambda) if issubclass(cls, IddsStrategy) else cls()
