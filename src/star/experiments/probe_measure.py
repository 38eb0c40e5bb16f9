"""What `star probe` measures on the live model: uncertainty on the probe set, calibration on the test set.

The uncertainty gap: on a fixed probe set, the model's greedy answers (graded against the gold
labels: simulation), and PE/ME of those answers, deterministic and with K MC-dropout passes.
Calibration: ECE of the test-set answers (engine/evaluation.py), and the same answers with their
confidence averaged over K MC-dropout passes at a given p.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from star.al.calibration import expected_calibration_error
from star.al.ranking import auroc
from star.al.seeds import row_seed
from star.config import RunConfig
from star.engine.adapter import dropout_rate, mc_dropout
from star.engine.batching import collate_pairs, encode_responses, length_batches
from star.engine.evaluation import EvalResult, answer_confidence, evaluate
from star.engine.forward import response_stats
from star.engine.generation import Generation, generate
from star.engine.modeling import LoadedModel
from star.engine.precision import autocast
from star.engine.scoring import option_logprobs, score_pairs
from star.engine.seeded_dropout import row_seeds
from star.tasks import Example, Task


@dataclass
class ProbeData:
    """Everything the measurements read: the config, the task, the loaded model, probe and test sets."""

    config: RunConfig
    task: Task
    loaded: LoadedModel
    probe: list[Example]  # with gold answers: the probe grades answers (simulation)
    probe_prompts: list[list[int]]
    test: list[Example]
    test_prompts: list[list[int]]
    show_progress: bool = True

    @property
    def pad_id(self) -> int:
        tok = self.loaded.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    @property
    def eval_mode(self) -> str:
        """How the test set is evaluated: eval.mode with auto resolved for the task."""
        return self.config.eval.resolved_mode(self.config.task)


def probe_answers(data: ProbeData, mc_seed: int, mc: bool) -> dict[str, list]:
    """The live model's greedy answers on the probe set: correct (n,), and PE/ME (n,) of each answer,
    deterministic and, with `mc`, the mean over al.mc_passes passes at al.mc_dropout_p (else None)."""
    cfg, model, tok = data.config.al, data.loaded.model, data.loaded.tokenizer
    with autocast(cfg.precision, data.loaded.device):
        gens = generate(model, tok, data.probe_prompts, cfg.max_new_tokens, cfg.batch_size,
                        is_complete=data.task.answer_complete, desc="generate (probe)",
                        show_progress=data.show_progress)
        responses = [g.token_ids or [tok.eos_token_id] for g in gens]
        det = score_pairs(model, data.probe_prompts, responses, data.pad_id, cfg.batch_size, passes=1,
                          desc="score (probe)", show_progress=data.show_progress)
        mc_u = None
        if mc:
            with dropout_rate(model, cfg.mc_dropout_p):
                mc_u = score_pairs(model, data.probe_prompts, responses, data.pad_id, cfg.batch_size,
                                   passes=cfg.mc_passes, seed=mc_seed, desc="score (probe, MC)",
                                   show_progress=data.show_progress)
    correct = [data.task.is_correct(data.task.extract(g.text), e.answer or "") for g, e in zip(gens, data.probe)]
    return {"correct": correct, "pe": det.mean("pe").tolist(), "me": det.mean("me").tolist(),
            "pe_mc": None if mc_u is None else mc_u.mean("pe").tolist(),
            "me_mc": None if mc_u is None else mc_u.mean("me").tolist()}


def gap_summary(base: dict[str, list], tuned: dict[str, list]) -> dict[str, Any]:
    """Accuracy on the probe set and the AUROC of each score at ranking the tuned model's wrong answers
    above its right ones: u_base (the base model's scores), u_full (deterministic), u_full_mc (K passes)."""
    wrong = ~np.asarray(tuned["correct"], dtype=bool)
    scores = {"u_base": (base["pe"], base["me"]), "u_full": (tuned["pe"], tuned["me"]),
              "u_full_mc": (tuned["pe_mc"], tuned["me_mc"])}
    return {"accuracy": float(1.0 - wrong.mean()), "n": len(wrong),
            "auroc": {name: None if pe is None else {"pe": auroc(np.asarray(pe), wrong),
                                                     "me": auroc(np.asarray(me), wrong)}
                      for name, (pe, me) in scores.items()}}


def evaluate_test(data: ProbeData) -> EvalResult:
    """Accuracy and ECE of the live model on the test set, as `star run` measures them after a round."""
    return evaluate(data.loaded.model, data.loaded.tokenizer, data.task, data.test, data.test_prompts, data.config.eval,
                    data.show_progress, mode=data.eval_mode, max_answer_tokens=data.config.train.max_answer_tokens)


def mc_calibration(data: ProbeData, result: EvalResult, ps: Sequence[float],
                   seed: int) -> dict[float, dict[str, float]]:
    """For each p in `ps`: the ECE and mean confidence of `result`'s answers (the deterministic ones, graded as
    there) when each answer's confidence is averaged over al.mc_passes LoRA-dropout passes at p."""
    if not ps:
        return {}
    correct = np.asarray([p["correct"] for p in result.predictions], dtype=float)
    if data.eval_mode == "options":
        confidence = {p: _mc_option_confidence(data, result, p, seed) for p in ps}
    else:  # the greedy answers again (deterministic: the ones `result` graded), then K passes per p
        gens = generate(data.loaded.model, data.loaded.tokenizer, data.test_prompts, data.config.eval.max_new_tokens,
                        data.config.eval.batch_size, is_complete=data.task.answer_complete,
                        desc="evaluate (again, for MC)", show_progress=data.show_progress)
        confidence = {p: _mc_answer_confidence(data, gens, p, seed) for p in ps}
    bins = data.config.eval.ece_bins
    return {p: {"ece": expected_calibration_error(c, correct, bins),
                "mean_confidence": float(c.mean()) if len(c) else 0.0} for p, c in confidence.items()}


def _mc_option_confidence(data: ProbeData, result: EvalResult, p: float, seed: int) -> np.ndarray:
    """(n,) probability of each chosen option, renormalised over the options, averaged over K passes at p."""
    options = [encode_responses(data.loaded.tokenizer, data.task.choice_texts_for(e) or [],
                                data.config.train.max_answer_tokens) for e in data.test]  # (n, C) each its own
    with dropout_rate(data.loaded.model, p):
        logp = option_logprobs(data.loaded.model, data.test_prompts, options, data.pad_id, data.config.eval.batch_size,
                               passes=data.config.al.mc_passes, seed=seed, desc="evaluate (options, MC)",
                               show_progress=data.show_progress)  # (n, C, K)
    chosen = [data.task.choices.index(pr["prediction"]) for pr in result.predictions]
    probs = np.exp(logp - logp.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)  # (n, C, K) renormalised over the options
    return probs[np.arange(len(chosen)), chosen].mean(axis=-1)  # (n,)


def _mc_answer_confidence(data: ProbeData, gens: Sequence[Generation], p: float, seed: int) -> np.ndarray:
    """(n,) P(answer tokens) of each greedy answer (evaluation's `answer_confidence`), averaged over K passes at p."""
    with dropout_rate(data.loaded.model, p):
        logprobs = mc_token_logprobs(data.loaded.model, data.test_prompts, [g.token_ids for g in gens], data.pad_id,
                                     data.config.al.mc_passes, seed, data.config.eval.batch_size)
    tok = data.loaded.tokenizer
    return np.array([np.mean([answer_confidence(tok, data.task, replace(g, logprobs=lp.tolist())) for lp in lps])
                     if g.token_ids else 0.0 for g, lps in zip(gens, logprobs)])


@torch.no_grad()
def mc_token_logprobs(model: torch.nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]],
                      pad_id: int, passes: int, seed: int, batch_size: int) -> list[np.ndarray]:
    """Teacher-forced log p of each response token under K passes of LoRA dropout: (K, L_i) per example
    ((K, 0) for an empty response). Example i's pass k uses the dropout seed row_seed(seed, i, k)."""
    device = next(model.parameters()).device
    out = [np.zeros((passes, len(r))) for r in responses]
    todo = [i for i, r in enumerate(responses) if r]
    lengths = [len(prompts[i]) + len(responses[i]) for i in todo]
    with mc_dropout(model, enabled=True):
        for part in length_batches(lengths, max(1, batch_size // passes)):
            rows = [(k, todo[j]) for k in range(passes) for j in part]  # (K*B,) pass-major
            batch = collate_pairs([prompts[i] for _, i in rows], [responses[i] for _, i in rows], pad_id).to(device)
            with row_seeds([row_seed(seed, i, k) for k, i in rows], batch.attention_mask.sum(1).tolist()):
                logp, _ = response_stats(model, batch)  # (M,)
            row_of = batch.rows.cpu().numpy()
            for r, (k, i) in enumerate(rows):
                out[i][k] = logp[torch.as_tensor(row_of == r)].double().cpu().numpy()
    return out
