"""Pool uncertainty of a round: the base model's (u_base, once per example, stored in the run) and the tuned model's."""

from __future__ import annotations

from star.al.uncertainty import Uncertainty
from star.engine.adapter import adapter_disabled, dropout_rate
from star.engine.batching import encode_responses
from star.engine.generation import generate
from star.engine.precision import scoring_precision
from star.engine.scoring import greedy_uncertainty, score_options, score_pairs
from star.loop.embeddings import keep_captured
from star.loop.experiment import Experiment
from star.store.io import append_jsonl, read_appended_jsonl


def _responses(exp: Experiment, idx: list[int], use_base: bool) -> list[list[int]]:
    """Response ids to score: the model's own greedy answers, or the gold answers (peeked)."""
    cfg, tok = exp.config, exp.model.tokenizer
    if cfg.al.response == "gold":
        answers = exp.oracle.peek([exp.pool[i].id for i in idx])
        texts = [exp.task.target_for(exp.pool[i], a) for i, a in zip(idx, answers)]
        return encode_responses(tok, texts, cfg.train.max_answer_tokens)
    prompts = [exp.pool_prompts[i] for i in idx]
    desc = "generate (base)" if use_base else "generate (pool)"
    gens = generate(exp.model.model, tok, prompts, cfg.al.max_new_tokens, cfg.al.batch_size,
                    is_complete=exp.task.answer_complete, desc=desc, show_progress=exp.show_progress, dist=exp.dist)
    return [g.token_ids or [tok.eos_token_id] for g in gens]


def pool_uncertainty(exp: Experiment, idx: list[int], use_base: bool, seed: int, embed: bool = False) -> Uncertainty:
    """Generation and scoring of pool examples `idx`, in al.precision: al.mc_passes MC-dropout passes, or one
    deterministic pass for the base model (nothing to drop out) or with al.mc_dropout off, taken from the greedy
    generation itself (al.score_from_generation); the MC passes drop out with al.mc_dropout_p (null: lora.dropout).
    `embed`: with the prompts' embeddings taken in the same pass (`Uncertainty.embeddings`)."""
    cfg = exp.config.al
    prompts = [exp.pool_prompts[i] for i in idx]
    passes = cfg.mc_passes if cfg.mc_dropout and not use_base else 1
    mc_p = cfg.mc_dropout_p if passes > 1 else None
    with scoring_precision(cfg.precision, exp.model.model, exp.model.device), dropout_rate(exp.model.model, mc_p):
        if cfg.response == "options":
            options = [encode_responses(exp.model.tokenizer, exp.task.choice_texts_for(exp.pool[i]) or [],
                                        exp.config.train.max_answer_tokens) for i in idx]  # (n, C): each its own
            return score_options(exp.model.model, prompts, options, exp.pad_id, cfg.batch_size, passes=passes,
                                 seed=seed, show_progress=exp.show_progress, dist=exp.dist, embed=embed)
        if cfg.response == "generated" and passes == 1 and cfg.score_from_generation:  # no second forward
            return greedy_uncertainty(exp.model.model, exp.model.tokenizer, prompts, exp.pad_id, cfg.max_new_tokens,
                                      cfg.batch_size, exp.task.answer_complete, desc="base" if use_base else "pool",
                                      show_progress=exp.show_progress, dist=exp.dist, embed=embed)
        responses = _responses(exp, idx, use_base)
        u = score_pairs(exp.model.model, prompts, responses, exp.pad_id, cfg.batch_size, passes=passes,
                        seed=seed, desc="score (base)" if use_base else "score (pool)",
                        show_progress=exp.show_progress, dist=exp.dist, embed=embed)
        if cfg.response == "generated" and cfg.cost.unit != "label":  # the greedy answers: al.cost's estimates
            u.answers = exp.model.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return u


def ensure_base_scores(exp: Experiment, idx: list[int]) -> None:
    """u_base for pool examples `idx`, each computed once with the adapter off and stored in the run. Its measure is
    the strategy's `base_measure`: PE or ME (bald's and pe-spread's too: one pass has no disagreement)."""
    measure = exp.strategy.base_measure
    if not exp.strategy.uses_base or measure is None:
        return
    path = exp.run.base_scores_path
    if not exp.base_scores and path.is_file():
        exp.base_scores = {r["id"]: r[measure] for r in read_appended_jsonl(path)}
    missing = [i for i in idx if exp.pool[i].id not in exp.base_scores]
    if not missing:
        return
    with adapter_disabled(exp.model.model):  # diversity strategies: the prompts' embeddings from the same pass
        u = pool_uncertainty(exp, missing, use_base=True, seed=0, embed=exp.strategy.uses_embeddings)
    keep_captured(exp, missing, u)
    rows = [{"id": exp.pool[i].id, "pe": float(u.pe[j].mean()), "me": float(u.me[j].mean())} for j, i in enumerate(missing)]
    if exp.dist.is_main:
        append_jsonl(path, rows)  # O(new rows): earlier rounds' rows are not rewritten
    exp.base_scores.update({exp.pool[i].id: float(getattr(u, measure)[j].mean()) for j, i in enumerate(missing)})
