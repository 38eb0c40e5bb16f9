"""A paired bootstrap over seeds and test items: pure numpy, no model, no files.

Why two levels: a comparison's numbers vary with the seed (initial labels, selection, training)
and with the test items (a finite sample of the task). One replicate resamples both:

1. the seeds, with replacement (S of S);
2. within them, the test items, with replacement (N of N): one draw shared by every seed when
   all seeds were evaluated on the same test set (the items are then a single sample, crossed
   with the seeds), else one draw per seed on its own test set (nested);

and the *same* draw serves every feature of a seed (both arms of a pair, every round), so what
the two arms share cancels in their difference. Without per-item data a seed's values have one
"item" each (its recorded metrics) and only the seeds are resampled.

A replicate's value of a feature is the mean over its drawn seeds of each seed's mean over its
drawn items; statistics of those means (differences, areas, labels to reach a target) are
computed per replicate, and the interval is their percentile interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000  # replicates per comparison
SEED = 0  # every comparison starts a fresh generator from this seed: same data -> same interval
CONFIDENCE = 0.95
_CHUNK = 2_000_000  # item counts held in memory at once (replicates per chunk: this / the largest test set)
_EPS = 1e-12


@dataclass(frozen=True)
class Settings:
    """How the bootstrap resamples: replicates, generator seed, interval level."""

    resamples: int = RESAMPLES
    seed: int = SEED
    confidence: float = CONFIDENCE


DEFAULT = Settings()


def _counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(size, n) float counts: how often each of n things is drawn in a draw of n with replacement; rows sum to n."""
    drawn = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n  # (size, n) flat indices
    return np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def observed_means(values: Sequence[np.ndarray]) -> np.ndarray:
    """(F,) mean over seeds of each seed's mean over its items; values[s] is (F, N_s)."""
    return np.mean([v.mean(axis=1) for v in values], axis=0)


def replicate_means(values: Sequence[np.ndarray], shared_items: bool, resample_items: bool = True,
                    settings: Settings = DEFAULT) -> np.ndarray:
    """(B, F) bootstrap replicates of `observed_means(values)`.

    values[s]: (F, N_s) per-item values of seed s (F features, e.g. correct 0/1 per arm and round).
    shared_items: every seed has the same items in the same order, so one item draw serves all seeds;
    resample_items False: the items are not resampled (seeds only).
    """
    n_seeds = len(values)
    if n_seeds == 0:
        raise ValueError("no seeds to resample")
    n_feat = values[0].shape[0]
    if shared_items and len({v.shape for v in values}) != 1:
        raise ValueError("shared_items needs every seed to have the same number of items")
    rng = np.random.default_rng(settings.seed)
    seed_counts = _counts(rng, n_seeds, settings.resamples)  # (B, S)
    means = np.empty((settings.resamples, n_feat))  # (B, F)
    step = max(1, _CHUNK // max(v.shape[1] for v in values))
    for lo in range(0, settings.resamples, step):
        size = min(step, settings.resamples - lo)
        per_seed = np.empty((size, n_seeds, n_feat))  # (b, S, F): each seed's mean over its drawn items
        shared = _counts(rng, values[0].shape[1], size) if shared_items and resample_items else None  # (b, N)
        for s, v in enumerate(values):
            if not resample_items:
                per_seed[:, s] = v.mean(axis=1)
                continue
            items = shared if shared is not None else _counts(rng, v.shape[1], size)  # (b, N_s)
            per_seed[:, s] = items @ v.T / v.shape[1]
        means[lo:lo + size] = np.einsum("bs,bsf->bf", seed_counts[lo:lo + size], per_seed) / n_seeds
    return means


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central `confidence` percentile interval of (B,) replicates (linear interpolation)."""
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [tail, 1.0 - tail])
    return float(lo), float(hi)


def difference_interval(estimate: float, samples: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, object]:
    """A difference's estimate, percentile interval of its (B,) replicates, and whether it excludes 0."""
    lo, hi = percentile_interval(samples, confidence)
    separable = lo > _EPS or hi < -_EPS
    return {"estimate": float(estimate), "lo": lo, "hi": hi, "separable": bool(separable),
            "verdict": f"separable at {confidence:.0%}" if separable else "not separable"}


def first_reach(curves: np.ndarray, targets: np.ndarray, labels: Sequence[float]) -> np.ndarray:
    """(B,) labels of the first round whose accuracy is at least the target; inf where none is.

    curves: (B, T) accuracy per round of each replicate; targets: (B,); labels: (T,) labels per round.
    """
    reached = curves >= targets[:, None] - _EPS  # (B, T)
    first = np.argmax(reached, axis=1)  # (B,) first True (0 when none: masked below)
    out = np.asarray(labels, dtype=np.float64)[first]
    return np.where(reached.any(axis=1), out, np.inf)


def reach_interval(estimate: float, samples: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, object]:
    """Labels to reach a target: estimate and percentile interval of (B,) replicates (inf: not reached;
    None in the output), each end an observed round's labels, and the share of replicates reaching it."""
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [tail, 1.0 - tail], method="inverted_cdf")

    def value(x: float) -> int | None:
        return None if not np.isfinite(x) else int(x)

    return {"estimate": value(estimate), "lo": value(lo), "hi": value(hi),
            "reached_share": float(np.isfinite(samples).mean())}
