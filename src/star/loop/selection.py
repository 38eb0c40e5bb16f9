"""Selection of a round: the candidates (all unlabelled, or a seeded subsample), their scores, the top k."""

from __future__ import annotations

import numpy as np

from star.al.seeds import derive_seed
from star.al.strategies import ScoreInputs, get_strategy
from star.errors import PoolExhaustedError
from star.loop.cost import estimate_costs, within_budget
from star.loop.embeddings import round_embeddings
from star.loop.experiment import Experiment, load_live_adapter
from star.loop.scoring import ensure_base_scores, pool_uncertainty


def _unlabelled(exp: Experiment, t: int) -> list[int]:
    """Pool examples without a label from rounds before t (round t's own, if a resume has some, stay candidates)."""
    labelled = {lab.example_id for lab in exp.store.up_to(t - 1)}  # rounds before t
    return [i for i, e in enumerate(exp.pool) if e.id not in labelled]


def _candidates(exp: Experiment, t: int) -> list[int]:
    """The pool examples scored in round t: all unlabelled, or a seeded subsample."""
    free = _unlabelled(exp, t)
    size = exp.config.al.score_subsample
    if t == 0 or size is None or size >= len(free):
        return free
    rng = np.random.default_rng(derive_seed(exp.config.seed, t, "subsample"))
    return sorted(int(i) for i in rng.choice(free, size=size, replace=False))


def select_round(exp: Experiment, t: int) -> tuple[list[str], float | None]:
    """Rank the candidates, write round-t/scores.jsonl, and return the selected ids and lambda."""
    cfg = exp.config
    idx = _candidates(exp, t)
    k = cfg.al.initial if t == 0 else cfg.al.query
    if len(idx) < k:
        raise PoolExhaustedError(f"round {t} needs {k} unlabelled examples but only {len(idx)} are left",
                                 hint="raise al.score_subsample or lower al.query")
    ids = [exp.pool[i].id for i in idx]
    if t > 0 or cfg.al.score_subsample is None:  # round 0 scores the whole pool only when unsubsampled
        ensure_base_scores(exp, idx)
    embeddings, labelled_embeddings = round_embeddings(exp, t, idx)  # (n, d), (m, d); None without uses_embeddings
    u_base = np.array([exp.base_scores[i] for i in ids]) if all(i in exp.base_scores for i in ids) and exp.base_scores else None
    strategy, lam_t, u_full, scored = exp.strategy, None, None, None
    if t == 0:
        strategy = get_strategy("random")  # L0 is a random draw, whatever the strategy
    else:
        lam_t = cfg.al.lambda_at(t - 1)
        if strategy.uses_full and strategy.measure is not None:
            load_live_adapter(exp, t - 1)
            scored = pool_uncertainty(exp, idx, use_base=False, seed=derive_seed(cfg.seed, t, "mc"))
            u_full = scored.value(strategy.measure)
    cost = estimate_costs(exp, t, idx, scored.answers if scored is not None else None)  # (n,) al.cost's estimates
    rng = np.random.default_rng(derive_seed(cfg.seed, t, "initial" if t == 0 else "select"))
    scores, chosen = strategy.select(ScoreInputs(u_base, u_full, lam_t or 0.0, rng, len(idx), embeddings=embeddings,
                                                 labelled_embeddings=labelled_embeddings,
                                                 cost=cost if cfg.al.cost.aware else None), k)
    chosen = within_budget(exp, t, chosen, cost)  # the last round may take fewer than k (al.stop.budget)
    if exp.dist.is_main:
        exp.run.write_scores(t, ids, u_base, u_full, scores, chosen, cost if cfg.al.cost.unit != "label" else None)
    return [ids[int(c)] for c in chosen], lam_t
