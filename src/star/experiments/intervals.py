"""The report's bootstrap intervals: each arm against random (and against --paired-with), paired by
seed, with a verdict, and each arm's labels to reach random's final accuracy with an interval.

A comparison takes the seeds both arms finished with the same labels per round (as the paired
table does). Its bootstrap resamples seeds and test items (`star.experiments.bootstrap`) when
every run of it has per-item correctness on the same items as its pair; otherwise it resamples
seeds only and says why. Seeds only with a single seed has nothing to resample: no interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from star.experiments.bootstrap import (
    DEFAULT,
    Settings,
    difference_interval,
    first_reach,
    observed_means,
    reach_interval,
    replicate_means,
)
from star.experiments.records import RunRecord
from star.experiments.statistics import aulc_weights, paired_runs


@dataclass
class PairData:
    """One comparison's bootstrap input: per paired seed, both arms' values on that seed's items."""

    seeds: list[int]
    labels: list[int]  # (n,) labels per round, of the first pair
    values: list[np.ndarray]  # per seed: (2n + 2, N_s) arm correct per round, reference per round, arm AULC, ref AULC
    per_item: bool  # False: one value per seed and feature (its metrics), seeds only
    shared: bool  # every seed's items are the same test set
    why_seeds_only: str | None


def _item_problem(pairs: Sequence[tuple[RunRecord, RunRecord]]) -> str | None:
    """Why these pairs cannot be resampled by test item (None when they can)."""
    for a, b in pairs:
        for rec in (a, b):
            if rec.items is None:
                return f"{rec.path}: {rec.items_missing or 'no per-item data'}"
        if a.items.ids != b.items.ids:  # type: ignore[union-attr]
            return f"{a.path} and {b.path} were tested on different items"
    return None


def _seed_values(a: RunRecord, b: RunRecord, n: int, per_item: bool) -> np.ndarray:
    """(2n + 2, N) one seed's features: per-item correctness per round of both runs, then their AULC per item
    (N = 1 and the recorded accuracies when not per item)."""
    w = aulc_weights([m["labels"] for m in a.metrics[:n]])  # (n,)
    if per_item:
        ca = a.items.correct[:n].astype(np.float64)  # type: ignore[union-attr]  # (n, N)
        cb = b.items.correct[:n].astype(np.float64)  # type: ignore[union-attr]  # (n, N)
    else:
        ca = np.array([[m["accuracy"]] for m in a.metrics[:n]], dtype=np.float64)  # (n, 1)
        cb = np.array([[m["accuracy"]] for m in b.metrics[:n]], dtype=np.float64)  # (n, 1)
    return np.vstack([ca, cb, w @ ca, w @ cb])


def pair_data(runs: Sequence[RunRecord], reference: Sequence[RunRecord]) -> PairData | None:
    """The bootstrap input of `runs` against `reference`, paired by seed; None without a shared seed."""
    pairs, n = paired_runs(runs, reference)
    if not pairs:
        return None
    why = _item_problem(pairs)
    values = [_seed_values(a, b, n, why is None) for a, b in pairs]
    shared = why is None and len({a.items.ids for a, _ in pairs}) == 1  # type: ignore[union-attr]
    return PairData([int(a.seed) for a, _ in pairs], [int(m["labels"]) for m in pairs[0][0].metrics[:n]],
                    values, why is None, shared, why)


def _resampled(data: PairData) -> str:
    """What the comparison's bootstrap resampled, in words."""
    if not data.per_item:
        return "seeds only"
    return "seeds and test items" + (" (one test set)" if data.shared else " (a test set per seed)")


#: Paired seeds a verdict needs: one seed's interval covers only its test items, not what another seed's initial
#: labels, selections and training would change, so it can look separable when seeds would not be.
MIN_SEEDS_FOR_VERDICT = 2
ONE_SEED_VERDICT = "no verdict (one seed: the interval covers test-item noise only)"


def _no_interval(estimate: float) -> dict[str, Any]:
    """A difference without an interval (one seed, no per-item data)."""
    return {"estimate": float(estimate), "lo": None, "hi": None, "separable": False,
            "verdict": "no interval (one seed, no per-item data)"}


def _differences(arm: str, against: str, data: PairData, obs: np.ndarray, reps: np.ndarray | None,
                 settings: Settings) -> dict[str, Any]:
    """One comparison's entry: final accuracy and AULC differences, their intervals and verdicts."""
    n = len(data.labels)
    cols = {"final_accuracy": (n - 1, 2 * n - 1), "aulc": (2 * n, 2 * n + 1)}
    out: dict[str, Any] = {"arm": arm, "against": against, "seeds": data.seeds, "resampled": _resampled(data),
                           "test_items": [int(v.shape[1]) for v in data.values] if data.per_item else None,
                           "why_seeds_only": data.why_seeds_only}
    for key, (i, j) in cols.items():
        est = obs[i] - obs[j]
        out[key] = _no_interval(est) if reps is None else difference_interval(est, reps[:, i] - reps[:, j],
                                                                               settings.confidence)
        if reps is not None and len(data.seeds) < MIN_SEEDS_FOR_VERDICT:
            out[key].update(separable=False, verdict=ONE_SEED_VERDICT)
    return out


def _reach(data: PairData, obs: np.ndarray, reps: np.ndarray | None, settings: Settings) -> dict[str, Any]:
    """Labels to reach the reference's final accuracy (first round reaching it), with its interval."""
    n = len(data.labels)
    est = first_reach(obs[None, :n], obs[None, 2 * n - 1], data.labels)[0]
    samples = np.array([est]) if reps is None else first_reach(reps[:, :n], reps[:, 2 * n - 1], data.labels)
    out = reach_interval(est, samples, settings.confidence)
    if reps is None:
        out.update(lo=None, hi=None)
    return {**out, "seeds": data.seeds, "resampled": _resampled(data), "why_seeds_only": data.why_seeds_only}


def add_intervals(arms: Sequence[dict[str, Any]], groups: dict[str, list[RunRecord]], random: dict[str, Any] | None,
                  paired: dict[str, Any] | None, settings: Settings = DEFAULT) -> list[dict[str, Any]]:
    """Set each arm's labels_to_reach_random_interval; return the comparisons, each arm against random
    and then against `paired` (when it is another arm)."""
    comparisons = []
    for arm in arms:
        arm["labels_to_reach_random_interval"] = None
    refs = [random] + ([paired] if paired is not None and paired is not random else [])
    for ref in (r for r in refs if r is not None):
        for arm in (a for a in arms if a["rounds"] and (a is not ref or ref is random)):
            data = pair_data(groups[arm["name"]], groups[ref["name"]])
            if data is None:
                continue
            obs = observed_means(data.values)  # (2n + 2,)
            can = data.per_item or len(data.seeds) > 1
            reps = replicate_means(data.values, data.shared, data.per_item, settings) if can else None  # (B, 2n + 2)
            if ref is random:
                arm["labels_to_reach_random_interval"] = _reach(data, obs, reps, settings)
            if arm is not ref:
                comparisons.append(_differences(arm["name"], ref["name"], data, obs, reps, settings))
    return comparisons


def describe(settings: Settings) -> dict[str, Any]:
    """report.json's record of how the intervals were made."""
    return {
        "in_words": f"{settings.confidence:.0%} percentile intervals from {settings.resamples:,} paired bootstrap"
                    f" replicates (generator seed {settings.seed}), resampling seeds and, within them, test items",
        "resamples": settings.resamples, "seed": settings.seed, "confidence": settings.confidence,
        "interval": "percentile (linear interpolation; labels to reach: the observed value at each end)",
        "resampled": "seeds with replacement; within them, test items with replacement: one draw for every seed"
                     " when all share one test set, else one per seed; the same draw for both arms of a seed."
                     " Seeds only where a run lacks complete predictions.jsonl (see why_seeds_only)",
        "separable": f"separable at {settings.confidence:.0%}: the interval of the difference excludes 0, over at"
                     f" least {MIN_SEEDS_FOR_VERDICT} paired seeds (one seed: {ONE_SEED_VERDICT})",
        "labels_to_reach": "first round whose accuracy (mean over the drawn seeds and items) is at least random's"
                           " final accuracy on the same draw; not reached: null",
    }
