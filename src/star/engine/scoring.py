"""Batched, gradient-free uncertainty of the pool: PE and ME over a response, K MC passes.

Output arrays: pe, me of shape (n, K) for n pool examples and K passes: K > 1 runs K passes with
LoRA dropout on (MC dropout), K = 1 one deterministic pass. Each example's dropout masks come
from its own seed (`seeded_dropout`), so scores do not depend on batching or processes.
Closed tasks: log p(option | prompt) of every answer option (`option_logprobs`, shared prefix).
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
from star.engine.forward import sequence_scores
from star.engine.generation import generate
from star.engine.options import prefix_option_batch, supports_shared_prefix
from star.engine.seeded_dropout import row_seeds
from star.parallel import zero3
from star.parallel.distributed import Dist

log = logging.getLogger(__name__)


def _score_batch(model: nn.Module, idx: list[int], prompts: Sequence[list[int]], responses: Sequence[list[int]],
                 pad_id: int, passes: int, seed: int, device: torch.device,
                 seed_rows: Sequence[int] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(PE (K,), ME (K,)) of each example of one batch, its K passes stacked on the batch axis.

    Row i's dropout seed is `row_seed(seed, seed_rows[i], k)` (default: i itself)."""
    rows = [(k, i) for k in range(passes) for i in idx]  # (K*B,) pass-major
    batch = collate_pairs([prompts[i] for _, i in rows], [responses[i] for _, i in rows], pad_id).to(device)
    lengths = batch.attention_mask.sum(1).tolist()
    owner = seed_rows if seed_rows is not None else range(len(prompts))
    with row_seeds([row_seed(seed, owner[i], k) for k, i in rows], lengths):
        pe, me = sequence_scores(model, batch)  # (K*B,) each
    pe_bk = pe.view(passes, len(idx)).T.double().cpu().numpy()  # (B, K)
    me_bk = me.view(passes, len(idx)).T.double().cpu().numpy()  # (B, K)
    return list(zip(pe_bk, me_bk))


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
                *, dist: Dist = Dist(), seed_rows: Sequence[int] | None = None) -> Uncertainty:
    """PE/ME of each response given its prompt: `passes` K > 1 passes with LoRA dropout on, or K = 1 without.

    Batches (of `batch_size` rows, K passes included) are shared out across `dist`'s processes
    when the run is launched on several, and the results gathered on every process. `seed_rows[i]`:
    the example whose dropout masks pair i takes (default i; pairs of one prompt can share them).
    """
    device = next(model.parameters()).device
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    batches = score_batches(lengths, max(1, batch_size // passes), passes, device)
    with zero3.inference(model), mc_dropout(model, enabled=passes > 1):
        rows = dist.map_batches(batches, lambda idx: _score_batch(model, idx, prompts, responses, pad_id, passes, seed,
                                                                  device, seed_rows), desc, show_progress)
    pe = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(prompts), passes)  # (n, K)
    me = np.array([r[1] for r in rows], dtype=np.float64).reshape(len(prompts), passes)  # (n, K)
    return Uncertainty(pe, me)


def full_pair_logprobs(model: nn.Module, prompts: Sequence[list[int]], options: Sequence[list[int]], pad_id: int,
                       batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score options",
                       show_progress: bool = True, *, dist: Dist = Dist()) -> np.ndarray:
    """log p(option | prompt) (n, C, K) from n x C full (prompt + option) rows; option c of example i takes
    example i's dropout masks, as the shared-prefix path does."""
    n, c = len(prompts), len(options)
    pairs = score_pairs(model, [p for p in prompts for _ in range(c)], [o for _ in prompts for o in options], pad_id,
                        batch_size, passes=passes, seed=seed, desc=desc, show_progress=show_progress, dist=dist,
                        seed_rows=[i for i in range(n) for _ in range(c)])
    return -pairs.pe.reshape(n, c, -1)  # PE of a pair = -log p(option)


def option_logprobs(model: nn.Module, prompts: Sequence[list[int]], options: Sequence[list[int]], pad_id: int,
                    batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score options",
                    show_progress: bool = True, *, dist: Dist = Dist()) -> np.ndarray:
    """log p(option c | prompt i) of shape (n, C, K): K > 1 passes with LoRA dropout on, or K = 1 without.

    Each prompt is run once and its C options against its KV cache (options.py), `batch_size`
    examples' rows (K passes included) per batch. Full (prompt + option) rows instead under FSDP or
    ZeRO-3 sharding (not verified there with a cache; sharded forwards must match across processes)
    and for a model without a separate decoder and LM head. Both paths give the same numbers.
    """
    if dist.sharded or not supports_shared_prefix(model):
        return full_pair_logprobs(model, prompts, options, pad_id, batch_size, passes, seed, desc, show_progress,
                                  dist=dist)
    device = next(model.parameters()).device
    longest = max(len(o) for o in options)
    batches = score_batches([len(p) + longest for p in prompts], max(1, batch_size // passes), passes, device)
    with zero3.inference(model), mc_dropout(model, enabled=passes > 1):
        rows = dist.map_batches(batches, lambda idx: prefix_option_batch(model, idx, prompts, options, pad_id, passes,
                                                                         seed, device), desc, show_progress)
    return np.stack(rows).reshape(len(prompts), len(options), passes)  # (n, C, K)


def score_options(model: nn.Module, prompts: Sequence[list[int]], options: Sequence[list[int]], pad_id: int,
                  batch_size: int, passes: int = 1, seed: int = 0, desc: str = "score options",
                  show_progress: bool = True, *, dist: Dist = Dist()) -> Uncertainty:
    """`option_uncertainty` of each prompt over the C answer options (token ids of each option's target)."""
    return option_uncertainty(option_logprobs(model, prompts, options, pad_id, batch_size, passes, seed, desc,
                                              show_progress, dist=dist))


def greedy_uncertainty(model: nn.Module, tokenizer, prompts: Sequence[list[int]], pad_id: int,
                       max_new_tokens: int, batch_size: int, is_complete: Callable[[str], bool] | None = None,
                       desc: str = "pool", show_progress: bool = True, *, dist: Dist = Dist()) -> Uncertainty:
    """PE/ME (n, 1) of each prompt's greedy answer, deterministic (eval mode, no dropout), as `score_pairs`
    gives for the answer's ids (EOS alone for an empty answer) with `passes=1`.

    The values come from the generation pass's own step logits: no second forward. Only answers whose
    statistics were not recorded (an empty answer, a model whose LM head is not exposed) are scored by
    a teacher-forced pass; that set is the same on every process, since generations are gathered.
    """
    with mc_dropout(model, enabled=False):
        gens = generate(model, tokenizer, prompts, max_new_tokens, batch_size, is_complete, desc=f"generate ({desc})",
                        show_progress=show_progress, dist=dist, stats=True)
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
    return Uncertainty(pe[:, None], me[:, None])
