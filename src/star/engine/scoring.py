"""Batched, gradient-free uncertainty of the pool: PE and ME over a response, K MC passes.

Output arrays: pe, me of shape (n, K) for n pool examples and K passes: K > 1 runs K passes with
LoRA dropout on (MC dropout), K = 1 one deterministic pass. Each example's dropout masks come
from its own seed (`seeded_dropout`), so scores do not depend on batching or processes.
Closed tasks: log p(option | prompt) of every answer option (`option_logprobs`, shared prefix), the
options shared by every prompt or each prompt's own (cloze-style OBQA).
Greedy answers, one deterministic pass: `greedy_uncertainty` takes PE/ME from the generation pass itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from star.al.seeds import row_seed
from star.al.uncertainty import Uncertainty, option_uncertainty
from star.engine.adapter import mc_dropout
from star.engine.batching import collate_pairs, length_batches
from star.engine.embeddings import masked_mean, prefix_mask, prompt_means, stack_rows
from star.engine.forward import decoder_and_head, sequence_scores
from star.engine.generation import Generation, generate
from star.engine.options import pad_right, per_prompt_options, prefix_option_batch, supports_shared_prefix
from star.engine.seeded_dropout import row_seeds
from star.parallel import zero3
from star.parallel.distributed import Dist
from star.parallel.fsdp import with_root_params

log = logging.getLogger(__name__)

#: Answer options' token ids: one list of C options shared by every prompt, or each prompt's own C options.
OptionIds = Sequence[list[int]] | Sequence[Sequence[list[int]]]


def _score_batch(model: nn.Module, idx: list[int], prompts: Sequence[list[int]], responses: Sequence[list[int]],
                 pad_id: int, passes: int, seed: int, device: torch.device,
                 seed_rows: Sequence[int] | None = None,
                 embed: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(PE (K,), ME (K,), prompt embedding (d,) or None) of each example of one batch, its K passes stacked on
    the batch axis; `embed`: the mean over the prompt's positions of the first pass's row (embeddings.py).

    Row i's dropout seed is `row_seed(seed, seed_rows[i], k)` (default: i itself)."""
    rows = [(k, i) for k in range(passes) for i in idx]  # (K*B,) pass-major
    batch = collate_pairs([prompts[i] for _, i in rows], [responses[i] for _, i in rows], pad_id).to(device)
    lengths = batch.attention_mask.sum(1).tolist()
    owner = seed_rows if seed_rows is not None else range(len(prompts))
    prompt_mask = (prefix_mask([len(prompts[i]) for _, i in rows], batch.input_ids.shape[1])  # (K*B, T) right-padded
                   if embed else None)  # built only when asked: this is the pool-scoring loop
    with row_seeds([row_seed(seed, owner[i], k) for k, i in rows], lengths), \
            prompt_means(model, prompt_mask, enabled=embed) as means:
        pe, me = sequence_scores(model, batch)  # (K*B,) each
    pe_bk = pe.view(passes, len(idx)).T.double().cpu().numpy()  # (B, K)
    me_bk = me.view(passes, len(idx)).T.double().cpu().numpy()  # (B, K)
    return list(zip(pe_bk, me_bk, means.rows(len(idx))))


CPU_TOKENS_PER_FORWARD = 1024  # rows x width of one CPU forward: GEMMs are already efficient at ~1k rows


def score_batches(lengths: Sequence[int], per_batch: int, passes: int, device: torch.device) -> list[list[int]]:
    """Example indices per forward, longest first: at most `per_batch` examples; on a CPU also at most
    CPU_TOKENS_PER_FORWARD tokens (K passes x the batch's widest row), since there a bigger batch
    only adds padding (a GSM8K example with its 3 passes is ~800 tokens: one per forward, no padding)."""
    if device.type != "cpu":
        return list(length_batches(lengths, per_batch))
    batches: list[list[int]] = []
    for (i,) in length_batches(lengths, 1):  # longest first, so a batch's first row is its widest
        last = batches[-1] if batches else []
        if last and len(last) < per_batch and passes * lengths[last[0]] * (len(last) + 1) <= CPU_TOKENS_PER_FORWARD:
            last.append(i)
        else:
            batches.append([i])
    return batches


def score_pairs(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
                batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score", show_progress: bool = True,
                *, dist: Dist = Dist(), seed_rows: Sequence[int] | None = None, embed: bool = False) -> Uncertainty:
    """PE/ME of each response given its prompt: `passes` K > 1 passes with LoRA dropout on, or K = 1 without.

    Batches (of `batch_size` rows, K passes included) are shared out across `dist`'s processes
    when the run is launched on several, and the results gathered on every process. `seed_rows[i]`:
    the example whose dropout masks pair i takes (default i; pairs of one prompt can share them).
    `embed`: also each prompt's embedding from the same forward (`Uncertainty.embeddings`, embeddings.py).
    """
    device = next(model.parameters()).device
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    batches = score_batches(lengths, max(1, batch_size // passes), passes, device)
    with zero3.inference(model), mc_dropout(model, enabled=passes > 1):
        rows = dist.map_batches(batches, lambda idx: _score_batch(model, idx, prompts, responses, pad_id, passes, seed,
                                                                  device, seed_rows, embed), desc, show_progress)
    pe = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(prompts), passes)  # (n, K)
    me = np.array([r[1] for r in rows], dtype=np.float64).reshape(len(prompts), passes)  # (n, K)
    return Uncertainty(pe, me, embeddings=stack_rows([r[2] for r in rows]) if embed else None)


def full_pair_logprobs(model: nn.Module, prompts: Sequence[list[int]], options: OptionIds, pad_id: int,
                       batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score options",
                       show_progress: bool = True, *, dist: Dist = Dist()) -> np.ndarray:
    """log p(option | prompt) (n, C, K) from n x C full (prompt + option) rows; option c of example i takes
    example i's dropout masks, as the shared-prefix path does. `options`: one shared list or one per prompt."""
    return _full_pair_scores(model, prompts, options, pad_id, batch_size, passes, seed, desc, show_progress, dist)[0]


def _full_pair_scores(model: nn.Module, prompts: Sequence[list[int]], options: OptionIds, pad_id: int,
                      batch_size: int, passes: int, seed: int, desc: str, show_progress: bool, dist: Dist,
                      embed: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """`full_pair_logprobs` (n, C, K) and, with `embed`, the prompts' embeddings (n, d) from the same rows."""
    per_prompt = per_prompt_options(options, len(prompts))  # (n, C) lists of ids
    n, c = len(prompts), len(per_prompt[0]) if per_prompt else 0
    pairs = score_pairs(model, [p for p in prompts for _ in range(c)], [o for opts in per_prompt for o in opts], pad_id,
                        batch_size, passes=passes, seed=seed, desc=desc, show_progress=show_progress, dist=dist,
                        seed_rows=[i for i in range(n) for _ in range(c)], embed=embed)
    embeddings = None if pairs.embeddings is None else pairs.embeddings[::c]  # (n, d): a prompt's C rows share it
    return -pairs.pe.reshape(n, c, -1), embeddings  # PE of a pair = -log p(option)


def option_logprobs(model: nn.Module, prompts: Sequence[list[int]], options: OptionIds, pad_id: int,
                    batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score options",
                    show_progress: bool = True, *, dist: Dist = Dist()) -> np.ndarray:
    """log p(option c | prompt i) of shape (n, C, K): `option_scores` without the embeddings."""
    return option_scores(model, prompts, options, pad_id, batch_size, passes, seed, desc, show_progress, dist=dist)[0]


def option_scores(model: nn.Module, prompts: Sequence[list[int]], options: OptionIds, pad_id: int,
                  batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score options",
                  show_progress: bool = True, *, dist: Dist = Dist(),
                  embed: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """log p(option c | prompt i) of shape (n, C, K): K > 1 passes with LoRA dropout on, or K = 1 without;
    `embed`: and each prompt's embedding (n, d) from its prompt pass (embeddings.py), else None.

    `options`: the token ids of C options shared by every prompt, or of each prompt's own C options
    (`options[i][c]`). Each prompt is run once and its C options against its KV cache (options.py),
    `batch_size` examples' rows (K passes included) per batch. Full (prompt + option) rows instead under
    FSDP or ZeRO-3 sharding (not verified there with a cache; sharded forwards must match across
    processes) and for a model without a separate decoder and LM head. Both paths give the same numbers.
    """
    if dist.sharded or not supports_shared_prefix(model):
        return _full_pair_scores(model, prompts, options, pad_id, batch_size, passes, seed, desc, show_progress,
                                 dist, embed)
    per_prompt = per_prompt_options(options, len(prompts))  # (n, C) lists of ids
    device = next(model.parameters()).device
    lengths = [len(p) + max(len(o) for o in opts) for p, opts in zip(prompts, per_prompt)]
    batches = score_batches(lengths, max(1, batch_size // passes), passes, device)
    with zero3.inference(model), mc_dropout(model, enabled=passes > 1):
        rows = dist.map_batches(batches, lambda idx: _prefix_batch(model, idx, prompts, per_prompt, pad_id, passes,
                                                                   seed, device, embed), desc, show_progress)
    logp = np.stack([r[0] for r in rows]).reshape(len(prompts), len(per_prompt[0]), passes)  # (n, C, K)
    return logp, stack_rows([r[1] for r in rows]) if embed else None


def _prefix_batch(model: nn.Module, idx: list[int], prompts: Sequence[list[int]],
                  per_prompt: Sequence[Sequence[list[int]]], pad_id: int, passes: int, seed: int, device: torch.device,
                  embed: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """`prefix_option_batch`'s (C, K) of each example, with its prompt embedding (d,) from the prompt pass (whose
    rows are pass-major and right-padded by `pad_right`) when `embed`, else None."""
    prompt_mask = pad_right([prompts[i] for _ in range(passes) for i in idx], pad_id)[1] if embed else None  # (K*B, W)
    with prompt_means(model, prompt_mask, enabled=embed) as means:
        logp = prefix_option_batch(model, idx, prompts, per_prompt, pad_id, passes, seed, device)
    return list(zip(logp, means.rows(len(idx))))


def score_options(model: nn.Module, prompts: Sequence[list[int]], options: OptionIds, pad_id: int,
                  batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score options",
                  show_progress: bool = True, *, dist: Dist = Dist(), embed: bool = False) -> Uncertainty:
    """`option_uncertainty` of each prompt over the C answer options (token ids of each option's target; one
    shared list or one per prompt); `embed`: with the prompts' embeddings from the same pass."""
    logp, embeddings = option_scores(model, prompts, options, pad_id, batch_size, passes, seed, desc, show_progress,
                                     dist=dist, embed=embed)
    u = option_uncertainty(logp)
    u.embeddings = embeddings
    return u


def greedy_uncertainty(model: nn.Module, tokenizer, prompts: Sequence[list[int]], pad_id: int,
                       max_new_tokens: int, batch_size: int, is_complete: Callable[[str], bool] | None = None,
                       desc: str = "pool", show_progress: bool = True, *, dist: Dist = Dist(),
                       embed: bool = False) -> Uncertainty:
    """PE/ME (n, 1) of each prompt's greedy answer (`greedy_answers` without the answers); `embed`: with the
    prompts' embeddings from the generation's prefill."""
    return greedy_answers(model, tokenizer, prompts, pad_id, max_new_tokens, batch_size, is_complete, desc,
                          show_progress, dist=dist, embed=embed)[1]


def greedy_answers(model: nn.Module, tokenizer, prompts: Sequence[list[int]], pad_id: int,
                   max_new_tokens: int, batch_size: int, is_complete: Callable[[str], bool] | None = None,
                   desc: str = "pool", show_progress: bool = True, *,
                   dist: Dist = Dist(), embed: bool = False) -> tuple[list[Generation], Uncertainty]:
    """Each prompt's greedy answer and its PE/ME (n, 1), deterministic (eval mode, no dropout), as `score_pairs`
    gives for the answer's ids (EOS alone for an empty answer) with `passes=1`; `embed`: with the prompts'
    embeddings (`Uncertainty.embeddings`), taken in the generation's prefill.

    The values come from the generation pass's own step logits: no second forward. Only answers whose
    statistics were not recorded (an empty answer, a model whose LM head is not exposed) are scored by
    a teacher-forced pass; that set is the same on every process, since generations are gathered.
    """
    with mc_dropout(model, enabled=False):
        gens = generate(model, tokenizer, prompts, max_new_tokens, batch_size, is_complete, desc=f"generate ({desc})",
                        show_progress=show_progress, dist=dist, stats=True, embed=embed)
    pe = np.array([np.nan if g.pe is None else g.pe for g in gens], dtype=np.float64)  # (n,)
    me = np.array([np.nan if g.me is None else g.me for g in gens], dtype=np.float64)  # (n,)
    redo = [i for i, g in enumerate(gens) if g.pe is None or g.me is None]
    if redo:
        log.info("%d of %d greedy answers scored by a second, teacher-forced pass (no step statistics: an empty "
                 "answer, or no LM head to read)", len(redo), len(gens))
        eos = tokenizer.eos_token_id
        forced = score_pairs(model, [prompts[i] for i in redo], [gens[i].token_ids or [eos] for i in redo], pad_id,
                             batch_size, desc=f"score ({desc})", show_progress=show_progress, dist=dist)
        pe[redo], me[redo] = forced.pe[:, 0], forced.me[:, 0]
    embeddings = stack_rows([g.embedding for g in gens]) if embed else None  # (n, d)
    return gens, Uncertainty(pe[:, None], me[:, None], embeddings=embeddings, answers=[g.text for g in gens])


def _prompt_batch(model: nn.Module, prompts: Sequence[list[int]], pad_id: int, device: torch.device) -> list[np.ndarray]:
    """Embeddings (d,) of one batch of prompts, right-padded, from the decoder alone (no LM head)."""
    ids, mask = (t.to(device) for t in pad_right(prompts, pad_id))  # (B, W) each
    parts = decoder_and_head(model)
    if parts is None:  # no exposed decoder: the full model's last hidden state (its LM head runs too)
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]  # (B, W, H)
    else:
        hidden = with_root_params(model, lambda: parts[0](input_ids=ids, attention_mask=mask).last_hidden_state)
    return list(masked_mean(hidden, mask).cpu().numpy())  # (d,) each


def prompt_embeddings(model: nn.Module, prompts: Sequence[list[int]], pad_id: int, batch_size: int,
                      desc: str = "embed", show_progress: bool = True, *, dist: Dist = Dist()) -> np.ndarray:
    """The prompts' embeddings (n, d), float32 (embeddings.py), from one prompt-only forward in eval mode: no
    generation, no LM head. The base model's when called with the adapter disabled; for the examples that no
    scoring pass embedded. Batched as the scoring passes are (`score_batches`), every row on every process.
    """
    device = next(model.parameters()).device
    batches = score_batches([len(p) for p in prompts], batch_size, 1, device)
    with zero3.inference(model), mc_dropout(model, enabled=False):
        rows = dist.map_batches(batches, lambda idx: _prompt_batch(model, [prompts[i] for i in idx], pad_id, device),
                                desc, show_progress)
    return np.stack(rows).astype(np.float32, copy=False)  # (n, d)
