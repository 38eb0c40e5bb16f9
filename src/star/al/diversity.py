"""Diversity in a batch: k-center greedy (coreset), IDDS, and spreading an uncertainty ranking over clusters.

Pure functions of embedding arrays. Every function L2-normalises the embeddings first, so all the geometry
is cosine geometry: similarity = cosine, distance = 1 - cosine (a zero vector stays zero: similarity 0 to all).
Each greedy function returns (scores (n,), picks (k,)) with the picks in the order they were made.
"""

from __future__ import annotations

import numpy as np

IDDS_LAMBDA = 0.67  # Tsvigun et al. 2022's lambda (ATGen: 0.667)
_CHUNK = 1024  # labelled rows per similarity block: (n, 1024) at a time, never (n, m)


def l2_normalise(e: np.ndarray | None, d: int | None = None) -> np.ndarray:
    """Rows scaled to unit length, float64 (None or no rows: an empty (0, d) array)."""
    if e is None or np.size(e) == 0:
        return np.zeros((0, d or 0))
    e = np.asarray(e, dtype=np.float64)  # (n, d)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n, d), got shape {e.shape}")
    norms = np.linalg.norm(e, axis=1, keepdims=True)  # (n, 1)
    return e / np.maximum(norms, 1e-12)


def _pair(embeddings: np.ndarray, labelled: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The candidates' and the labelled set's unit rows, checked to share a dimension."""
    x = l2_normalise(embeddings)  # (n, d)
    lab = l2_normalise(labelled, x.shape[1])  # (m, d), m may be 0
    if len(lab) and lab.shape[1] != x.shape[1]:
        raise ValueError(f"labelled embeddings have dimension {lab.shape[1]}, the candidates' {x.shape[1]}")
    return x, lab


def max_similarity(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each unit row of x's highest cosine to a unit row of ref (-inf when ref is empty), in blocks."""
    best = np.full(len(x), -np.inf)  # (n,)
    for start in range(0, len(ref), _CHUNK):
        best = np.maximum(best, (x @ ref[start:start + _CHUNK].T).max(axis=1))  # (n, c) -> (n,)
    return best


def k_center_greedy(embeddings: np.ndarray, labelled: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Coreset (Sener & Savarese 2018): k times, pick the candidate farthest (1 - cos) from the labelled set
    and the picks so far. With no labelled set the candidates' mean direction stands in for it (no RNG).

    Scores (n,): a pick's distance when picked, anyone else's distance to labelled + picks after the batch;
    they never increase along the picks, so the picks are a top-k of the scores. Ties: the lower index.
    """
    x, lab = _pair(embeddings, labelled)  # (n, d), (m, d)
    if not len(lab):
        lab = l2_normalise(x.mean(axis=0, keepdims=True))  # (1, d); a zero mean: distance 1 to all
    dist = 1.0 - max_similarity(x, lab)  # (n,) distance to the covered set
    picked = np.zeros(len(x), dtype=bool)
    scores, picks = np.zeros(len(x)), []
    for _ in range(min(k, len(x))):
        p = int(np.argmax(np.where(picked, -np.inf, dist)))
        picks.append(p)
        scores[p], picked[p] = dist[p], True
        dist = np.minimum(dist, 1.0 - x @ x[p])  # (n,) the pick now covers its neighbours
    scores[~picked] = dist[~picked]
    return scores, np.array(picks, dtype=np.int64)


def idds(embeddings: np.ndarray, labelled: np.ndarray | None, k: int,
         lam: float = IDDS_LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """In-domain diversity sampling (Tsvigun et al. 2022, greedy as in ATGen): k times, pick the candidate
    maximising lam * mean cos to the other unpicked candidates - (1 - lam) * mean cos to the labelled set;
    the pick then joins the labelled set. An empty labelled set counts 0; a lone candidate's first term is 0.

    Scores (n,): a pick's IDDS score when picked, anyone else's after the batch. Ties: the lower index.
    """
    x, lab = _pair(embeddings, labelled)  # (n, d), (m, d)
    n = len(x)
    self_sim = (x * x).sum(axis=1)  # (n,) 1, or 0 for a zero vector
    u_dot, u_count = x @ x.sum(axis=0), n  # (n,) sum of cos to the unpicked candidates (self included)
    l_dot, l_count = (x @ lab.sum(axis=0) if len(lab) else np.zeros(n)), len(lab)  # (n,) sum of cos to labelled
    picked = np.zeros(n, dtype=bool)
    scores, picks = np.zeros(n), []

    def current() -> np.ndarray:  # (n,) IDDS against the sets as they stand
        u = (u_dot - self_sim) / (u_count - 1) if u_count > 1 else np.zeros(n)  # others only
        lab_term = l_dot / l_count if l_count else np.zeros(n)
        return lam * u - (1.0 - lam) * lab_term

    for _ in range(min(k, n)):
        now = np.where(picked, -np.inf, current())  # (n,)
        p = int(np.argmax(now))
        picks.append(p)
        scores[p], picked[p] = now[p], True
        moved = x @ x[p]  # (n,) the pick leaves the unpicked and joins the labelled
        u_dot, u_count, l_dot, l_count = u_dot - moved, u_count - 1, l_dot + moved, l_count + 1
    scores[~picked] = current()[~picked]
    return scores, np.array(picks, dtype=np.int64)


def kmeans(embeddings: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    """Cluster ids (n,) from k-means on the unit rows: k-means++ seeding from `rng`, then Lloyd steps until
    no assignment changes (at most `iters`). Fewer than k distinct rows: fewer clusters. An emptied cluster
    keeps its centre."""
    x = l2_normalise(embeddings)  # (n, d)
    centres = _kmeans_pp(x, k, rng)  # (c, d), c <= k
    labels = np.full(len(x), -1)
    for _ in range(iters):
        sq = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]  # (n, c)
        new = np.argmin(sq, axis=1)  # (n,) ties: the lower centre
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(len(centres)):
            if (labels == c).any():
                centres[c] = x[labels == c].mean(axis=0)
    return labels


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): centres (c, d), c <= k, each a row of x."""
    sq = (x * x).sum(axis=1)  # (n,)
    centres = [int(rng.integers(len(x)))]
    d2 = np.maximum(sq + sq[centres[0]] - 2.0 * x @ x[centres[0]], 0.0)  # (n,) squared distance to the nearest centre
    while len(centres) < min(k, len(x)) and d2.sum() > 1e-12:
        c = int(rng.choice(len(x), p=d2 / d2.sum()))
        centres.append(c)
        d2 = np.minimum(d2, np.maximum(sq + sq[c] - 2.0 * x @ x[c], 0.0))
    return x[centres].copy()


def spread_by_cluster(scores: np.ndarray, clusters: np.ndarray, k: int) -> np.ndarray:
    """The highest-scoring candidate of each cluster (the k highest such heads if there are more than k),
    then, while fewer than k, the highest-scoring of the rest. Ties: the lower index. Returns (k,) indices,
    highest score first."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")  # (n,) best first
    _, first = np.unique(np.asarray(clusters)[order], return_index=True)  # each cluster's best, by rank
    heads = order[np.sort(first)][:k]
    rest = order[~np.isin(order, heads)][: k - len(heads)]
    picks = np.concatenate([heads, rest]).astype(np.int64)
    return picks[np.lexsort((picks, -np.asarray(scores, dtype=np.float64)[picks]))]  # score desc, then index


def diverse_top_k(scores: np.ndarray, embeddings: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k candidates that spread the ranking `scores` (n,): k-means the embeddings into k clusters and take
    each cluster's highest score (see spread_by_cluster); k >= n takes every candidate."""
    n = len(scores)
    if k >= n:
        return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return spread_by_cluster(scores, kmeans(embeddings, k, rng), k)
