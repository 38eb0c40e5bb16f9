"""How well a score ranks one class above the other: AUROC (pure numpy).

The probes ask whether an uncertainty score puts the examples a model gets wrong above the
ones it gets right: AUROC = P(score of a positive > score of a negative), ties counted half
(the Mann-Whitney U statistic over n_pos x n_neg, computed from average ranks in O(n log n)).
"""

from __future__ import annotations

import numpy as np


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(equal); NaN when either class is empty.

    `score` (n,) real numbers, `positive` (n,) booleans (e.g. the answer was wrong).
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"auroc needs one label per score, got {s.shape[0]} scores and {y.shape[0]} labels")
    if np.isnan(s).any():
        raise ValueError("auroc got NaN scores")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of each distinct value's last occurrence
    mean_rank = (ends - counts + 1 + ends) / 2.0  # ties share their average rank
    ranks = mean_rank[inverse]  # (n,)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
