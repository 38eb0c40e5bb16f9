"""The numbers of a comparison report: accuracy, AULC, ECE, reliability and seconds per arm.

Runs are grouped into *arms*: the arm name recorded in a `star compare` grid (grid.yaml), else
the run's `al.strategy`. Every number is computed over an arm's finished runs (one per seed):

- mean +/- std over seeds, std the sample standard deviation (ddof=1; 0 for a single seed);
- normalised AULC of a run = trapezoid area under accuracy vs labels / (labels_last - labels_first),
  i.e. the mean accuracy over the labelling budget (a single round: its accuracy); per arm,
  mean +/- std of the runs' AULC;
- labels to reach random = labels of the first round whose mean accuracy is at least the random
  arm's final mean accuracy (the arm named "random", else the first arm whose runs all use
  al.strategy=random); "not reached" otherwise; absent when there is no random arm;
- reliability = the final round's bins of every run, pooled: counts summed, confidence and
  accuracy count-weighted; pooled ECE = sum_b n_b / N |acc_b - conf_b| over those bins;
- seconds per phase = mean over all (run, round) pairs of metrics.json's `seconds`;
- cumulative annotation cost per round = metrics.json's cost.total (al.cost.unit), mean +/- std over
  runs; a run recorded before costs existed costs its label count (unit "label").

A run with fewer finished rounds than `al.rounds` is unfinished: it is listed, and left out of
every number (so each arm's curve averages the same rounds over the same seeds). A run a stopping
rule ended early (al.stop) is finished; an arm's numbers then cover the rounds all its runs have.

The bootstrap intervals and verdicts of the paired differences are `star.experiments.intervals`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from star.al.calibration import bins_ece
from star.experiments.records import RunRecord

PHASES = ("score", "label", "train", "eval", "total")
FORMULAS = {
    "std": "sample standard deviation over seeds (ddof=1); 0 for a single seed",
    "aulc": "normalised AULC = trapezoid area under accuracy vs labels / (labels_last - labels_first)"
            " = mean accuracy over the labelling budget; per arm: mean and std of the runs' AULC",
    "labels_to_reach_random": "labels of the first round whose mean accuracy is at least the random arm's"
                              " final mean accuracy",
    "reliability": "final round of every finished run, pooled: counts summed, confidence and accuracy"
                   " count-weighted; pooled ECE = sum_b n_b / N |acc_b - conf_b|",
    "paired": "paired by seed: per seed that the arm and the reference arm (random, or --paired-with) both"
              " finished with the same labels per round (same initial labels, same test set), the arm's final"
              " accuracy (or AULC) minus the reference's; mean and std of those differences, and the seeds"
              " where the arm's final accuracy is higher / equal / lower",
    "seconds": "mean over all (run, round) pairs of metrics.json seconds",
    "cost": "cumulative annotation cost after each round (metrics.json cost.total, in al.cost.unit): mean and std"
            " over runs; runs recorded before costs existed cost one per label",
    "unfinished": "runs with fewer finished rounds than al.rounds are listed and excluded from every number; a run"
                  " a stopping rule ended early (al.stop) counts as finished, and an arm's numbers then cover the"
                  " rounds all its finished runs have",
}
_EPS = 1e-12


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and sample std (ddof=1; 0 for one value) of `values`; both None when a value is unknown (None)."""
    if any(v is None for v in values):
        return {"mean": None, "std": None}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def normalised_aulc(labels: Sequence[float], accuracy: Sequence[float]) -> float:
    """Trapezoid area under accuracy vs labels / label range (one round or no range: its accuracy)."""
    x, y = np.asarray(labels, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("labels and accuracy must be non-empty and of equal length")
    span = x[-1] - x[0]
    if len(x) == 1 or span == 0:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / span)


def aulc_weights(labels: Sequence[float]) -> np.ndarray:
    """(T,) weights w with normalised_aulc(labels, acc) == w @ acc: the AULC is linear in the accuracies."""
    x = np.asarray(labels, dtype=np.float64)
    span = x[-1] - x[0]
    if len(x) == 1 or span == 0:
        return np.full(len(x), 1.0 / len(x))
    w = np.zeros(len(x))
    w[:-1] += (x[1:] - x[:-1]) / 2.0
    w[1:] += (x[1:] - x[:-1]) / 2.0
    return w / span


def _pooled_bin(group: Sequence[dict[str, float]]) -> dict[str, Any]:
    """One confidence bin of several evaluations: counts summed, confidence and accuracy count-weighted."""
    count = sum(int(b["count"]) for b in group)
    means = {key: float(sum(b["count"] * b[key] for b in group) / count) if count else 0.0
             for key in ("confidence", "accuracy")}
    return {"lo": group[0]["lo"], "hi": group[0]["hi"], "count": count, **means}


def pool_reliability(bin_lists: Sequence[list[dict[str, float]]]) -> dict[str, Any] | None:
    """Reliability bins of several evaluations pooled (same binning required), with their ECE; None if
    the binnings differ."""
    if not bin_lists or any(len(b) != len(bin_lists[0]) for b in bin_lists) or not bin_lists[0]:
        return None
    pooled = [_pooled_bin([bins[i] for bins in bin_lists]) for i in range(len(bin_lists[0]))]
    return {"bins": pooled, "count": sum(b["count"] for b in pooled), "ece": bins_ece(pooled)}


def _mean_seconds(runs: Sequence[RunRecord]) -> dict[str, float]:
    """Mean seconds per phase over every (run, round), and the mean whole-run total."""
    out: dict[str, float] = {}
    for phase in PHASES:
        values = [m["seconds"][phase] for r in runs for m in r.metrics if phase in m.get("seconds", {})]
        if values:
            out[phase] = float(np.mean(values))
    timed = [r for r in runs if any("seconds" in m for m in r.metrics)]  # runs read back from old reports: untimed
    totals = [sum(m.get("seconds", {}).get("total", 0.0) for m in r.metrics) for r in timed]
    if totals or not runs:
        out["run_total"] = float(np.mean(totals)) if totals else 0.0
    return out


def total_cost(m: dict[str, Any]) -> float:
    """Cumulative annotation cost after a round (its metrics.json); a round recorded before costs: its labels."""
    cost = m.get("cost")
    return float(cost["total"]) if isinstance(cost, dict) else float(m["labels"])


def cost_unit(rec: RunRecord) -> str:
    """The unit a run's costs are recorded in ("label" for runs recorded before costs existed)."""
    cost = rec.metrics[0].get("cost") if rec.metrics else None
    return str(cost["unit"]) if isinstance(cost, dict) else "label"


def _round_stats(done: Sequence[RunRecord], n: int) -> list[dict[str, Any]]:
    """Per round t < n: labels (of the first run), accuracy, ECE and cumulative cost mean +/- std over runs."""
    return [{"round": t, "labels": int(done[0].metrics[t]["labels"]),
             "accuracy": mean_std([r.metrics[t]["accuracy"] for r in done]),
             "ece": mean_std([r.metrics[t]["ece"] for r in done]),
             "cost": mean_std([total_cost(r.metrics[t]) for r in done])} for t in range(n)]


def _run_aulc(rec: RunRecord, n: int) -> float:
    """Normalised AULC of one run's first n rounds."""
    return normalised_aulc([m["labels"] for m in rec.metrics[:n]], [m["accuracy"] for m in rec.metrics[:n]])


def arm_summary(name: str, recs: Sequence[RunRecord]) -> dict[str, Any]:
    """Every number of one arm, over its finished runs."""
    done = [r for r in recs if r.finished]
    out: dict[str, Any] = {
        "name": name, "strategies": sorted({r.config.al.strategy for r in recs if r.config is not None}),
        "seeds": [r.seed for r in done], "n_runs": len(done), "n_unfinished": len(recs) - len(done),
        "rounds": [], "final_accuracy": None, "final_ece": None, "aulc": None, "seconds": {}, "reliability": None,
        "labels_to_reach_random": None, "reached_random": None,
        "cost_units": sorted({cost_unit(r) for r in done}), "final_cost": None,
    }
    if not done:
        return out
    n = min(len(r.metrics) for r in done)
    out["rounds"] = _round_stats(done, n)
    out["final_accuracy"], out["final_ece"] = out["rounds"][-1]["accuracy"], out["rounds"][-1]["ece"]
    out["final_cost"] = out["rounds"][-1]["cost"]
    out["aulc"] = mean_std([_run_aulc(r, n) for r in done])
    out["seconds"] = _mean_seconds(done)
    out["reliability"] = pool_reliability([r.metrics[n - 1].get("reliability") or [] for r in done])
    return out


def random_arm(arms: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The reference arm: named 'random', else the first whose runs all use al.strategy=random."""
    ready = [a for a in arms if a["rounds"]]
    named = [a for a in ready if a["name"] == "random"]
    return (named or [a for a in ready if a["strategies"] == ["random"]] or [None])[0]


def add_labels_to_reach(arms: Sequence[dict[str, Any]], reference: dict[str, Any] | None) -> None:
    """Set each arm's labels_to_reach_random (None: not reached) and reached_random."""
    if reference is None:
        return
    target = reference["final_accuracy"]["mean"]
    for arm in arms:
        if not arm["rounds"]:
            continue
        hit = next((r for r in arm["rounds"] if r["accuracy"]["mean"] >= target - _EPS), None)
        arm["reached_random"] = hit is not None
        arm["labels_to_reach_random"] = None if hit is None else hit["labels"]


def paired_runs(runs: Sequence[RunRecord],
                reference: Sequence[RunRecord]) -> tuple[list[tuple[RunRecord, RunRecord]], int]:
    """(run, reference run) per seed both finished with the same labels in each of their first n rounds,
    and that n (the fewest rounds any of them finished)."""
    ref = {r.seed: r for r in reference if r.finished}
    pairs = [(r, ref[r.seed]) for r in runs if r.finished and r.seed in ref]
    n = min((len(r.metrics) for pair in pairs for r in pair), default=0)
    pairs = [(a, b) for a, b in pairs if [m["labels"] for m in a.metrics[:n]] == [m["labels"] for m in b.metrics[:n]]]
    return pairs, n


def _paired(runs: Sequence[RunRecord], reference: Sequence[RunRecord]) -> dict[str, Any] | None:
    """Final accuracy and AULC minus the reference's, per seed both finished with the same labels per round."""
    pairs, n = paired_runs(runs, reference)
    if not pairs:
        return None
    d_acc = [a.metrics[n - 1]["accuracy"] - b.metrics[n - 1]["accuracy"] for a, b in pairs]
    return {"seeds": [a.seed for a, _ in pairs], "final_accuracy": mean_std(d_acc),
            "aulc": mean_std([_run_aulc(a, n) - _run_aulc(b, n) for a, b in pairs]),
            "better": sum(d > _EPS for d in d_acc), "equal": sum(abs(d) <= _EPS for d in d_acc),
            "worse": sum(d < -_EPS for d in d_acc)}


def add_paired(arms: Sequence[dict[str, Any]], groups: dict[str, list[RunRecord]],
                reference: dict[str, Any] | None) -> None:
    """Set each other arm's `paired` (None where it shares no finished seed with the reference arm)."""
    for arm in arms:
        arm["paired"] = None
        if reference is not None and arm is not reference and arm["rounds"]:
            arm["paired"] = _paired(groups[arm["name"]], groups[reference["name"]])

