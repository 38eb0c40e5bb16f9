"""The base model's prompt embeddings of a round, for strategies that use them (`Strategy.uses_embeddings`).

Each pool example's embedding is computed once per run and kept in the run directory (store/embeddings.py):
taken from the base-model pass that computes u_base when there is one (`keep_captured`), else from one
prompt-only forward of the base model (`round_embeddings`). A strategy without embeddings costs nothing here.
"""

from __future__ import annotations

import numpy as np

from star.al.uncertainty import Uncertainty
from star.engine.adapter import adapter_disabled
from star.engine.precision import scoring_precision
from star.engine.scoring import prompt_embeddings
from star.loop.experiment import Experiment
from star.store.embeddings import EmbeddingCache


def embedding_cache(exp: Experiment) -> EmbeddingCache:
    """The run's embeddings, read from its round files on first use."""
    if exp.embedding_cache is None:
        exp.embedding_cache = EmbeddingCache.read(exp.run)
    return exp.embedding_cache


def keep_captured(exp: Experiment, idx: list[int], u: Uncertainty) -> None:
    """Keep the embeddings (n, d) the base pass over pool examples `idx` captured (none: nothing to keep)."""
    if u.embeddings is not None:
        embedding_cache(exp).add([exp.pool[i].id for i in idx], u.embeddings)


def _labelled_before(exp: Experiment, t: int) -> list[int]:
    """Pool positions of the examples labelled in rounds before t, in pool order."""
    labelled = {lab.example_id for lab in exp.store.up_to(t - 1)}  # rounds before t
    return [i for i, e in enumerate(exp.pool) if e.id in labelled]


def round_embeddings(exp: Experiment, t: int, idx: list[int]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(candidates' (n, d), examples labelled before round t (m, d)) for the strategy; (None, None) when it does
    not use embeddings, and in round 0 (a random draw).

    Rows no pass has computed yet come from one prompt-only forward of the base model, in al.precision;
    the round's new rows (these, and those the base pass captured) are written to round-t/embeddings.npz.
    """
    if not exp.strategy.uses_embeddings:
        return None, None
    cache, labelled = embedding_cache(exp), _labelled_before(exp, t)
    if t > 0:
        missing = [i for i in idx + labelled if exp.pool[i].id not in cache]
        if missing:
            model, cfg = exp.model.model, exp.config.al
            with adapter_disabled(model), scoring_precision(cfg.precision, model, exp.model.device):
                rows = prompt_embeddings(model, [exp.pool_prompts[i] for i in missing], exp.pad_id, cfg.batch_size,
                                         desc="embed (base)", show_progress=exp.show_progress, dist=exp.dist)
            cache.add([exp.pool[i].id for i in missing], rows)
    cache.flush(t, write=exp.dist.is_main)
    if t == 0:
        return None, None
    return cache.get([exp.pool[i].id for i in idx]), cache.get([exp.pool[i].id for i in labelled])
