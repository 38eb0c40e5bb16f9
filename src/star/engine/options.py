"""log p(option | prompt) for a closed answer set, each prompt run once: a shared prefix.

The C options are one list for every prompt (letters, true/false) or each prompt's own C option
texts (cloze-style OBQA). One forward over a batch of prompts fills a KV cache; the cache is repeated over the C options
and one more forward runs every option's tokens against it. The prompt costs one forward, not
C, and the option forward is only as wide as the longest option. Each (example, pass) row keeps
its own seeded LoRA-dropout mask (`row_seed(seed, i, k)`, shared by the C options and continued
over the option tokens with `row_seeds(starts=...)`), so the numbers equal those of C full
(prompt + option) rows scored with the same seeds (scoring.py's full-pair path) to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from star.al.seeds import row_seed
from star.engine.forward import LM_HEAD_CHUNK, decoder_and_head, token_stats
from star.engine.kv_cache import new_cache
from star.engine.seeded_dropout import continued_draws, row_seeds
from star.parallel.fsdp import with_root_params
from star.parallel.params import head_function


def pad_right(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, W), attention mask (B, W)) of rows padded on the right to the longest (W >= 1)."""
    width = max(1, max((len(s) for s in seqs), default=0))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, W)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, W)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def per_prompt_options(options: Sequence[list[int]] | Sequence[Sequence[list[int]]], n: int) -> list[list[list[int]]]:
    """The C option id lists of each of n prompts: one shared list (C options) repeated, or n lists of C each.

    A shared list is recognised by its first option being token ids (ints); every prompt must then
    hold the same number C >= 1 of non-empty options.
    """
    if not options:
        raise ValueError("no answer options to score")
    first = options[0]
    shared = bool(first) and isinstance(first[0], (int, np.integer))
    rows = [list(options)] * n if shared else [list(o) for o in options]
    if len(rows) != n:
        raise ValueError(f"{len(rows)} option lists for {n} prompts; give one list of options, or one per prompt")
    counts = {len(r) for r in rows}
    if len(counts) > 1 or 0 in counts or any(not o for r in rows for o in r):
        raise ValueError(f"every prompt needs the same number of non-empty options; got counts {sorted(counts)}")
    return rows  # (n, C) lists of ids


def _option_hidden(decoder: nn.Module, prompt_rows: Sequence[list[int]], options: Sequence[Sequence[list[int]]],
                   pad_id: int, seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """Final hidden states (R, C, L, H) that predict option c's token j after prompt row r (L: longest option).

    `options[r]` are row r's C options. Position 0 is the prompt's last state; positions 1.. come from
    the option tokens run against the prompt's KV cache, repeated over the C options (row r * C + c).
    """
    ids, mask = (t.to(device) for t in pad_right(prompt_rows, pad_id))  # (R, W) each
    plen = mask.sum(1)  # (R,)
    R, C = ids.shape[0], len(options[0])
    L = max(len(o) for row in options for o in row)
    keyword, cache = new_cache(decoder)
    with row_seeds(seeds, plen.tolist()):
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=True, **{keyword: cache}).last_hidden_state
    last = hidden[torch.arange(R, device=device), plen - 1]  # (R, H): predicts each option's first token
    out = last[:, None, None, :].expand(R, C, L, last.shape[-1]).clone()  # (R, C, L, H)
    if L == 1:
        return out
    inputs = [list(o[:-1]) for row in options for o in row]  # (R*C,) an option's last token is only predicted
    opt_ids, opt_mask = (t.to(device) for t in pad_right(inputs, pad_id))  # (R*C, L-1) each
    cache.batch_repeat_interleave(C)  # row r -> rows r*C .. r*C + C-1
    full_mask = torch.cat([mask.repeat_interleave(C, 0), opt_mask], dim=1)  # (R*C, W + L-1)
    positions = plen.repeat_interleave(C)[:, None] + torch.arange(L - 1, device=device)  # (R*C, L-1)
    with row_seeds([s for s in seeds for _ in range(C)], [len(x) for x in inputs], plen.repeat_interleave(C).tolist()):
        tail = decoder(input_ids=opt_ids, attention_mask=full_mask, position_ids=positions,
                       use_cache=True, **{keyword: cache}).last_hidden_state  # (R*C, L-1, H)
    out[:, :, 1:] = tail.view(R, C, L - 1, -1)
    return out


def prefix_option_batch(model: nn.Module, idx: Sequence[int], prompts: Sequence[list[int]],
                        options: Sequence[list[int]] | Sequence[Sequence[list[int]]], pad_id: int, passes: int,
                        seed: int, device: torch.device) -> list[np.ndarray]:
    """log p(option | prompt) (C, K) of each example of one batch, its K passes stacked on the batch axis.

    `options`: one shared list of C options, or each prompt's own C options (`per_prompt_options`).
    """
    decoder, head = decoder_and_head(model)
    per_prompt = per_prompt_options(options, len(prompts))
    rows = [(k, i) for k in range(passes) for i in idx]  # (R,) pass-major, R = K*B
    row_options = [per_prompt[i] for _, i in rows]  # (R, C) lists of ids
    R, C = len(rows), len(row_options[0])
    L = max(len(o) for row in row_options for o in row)
    flat_options = [o for row in row_options for o in row]  # (R*C,)
    targets = pad_right(flat_options, pad_id)[0].to(device).view(R, C, -1)  # (R, C, L)
    valid = torch.tensor([[j < len(o) for j in range(L)] for o in flat_options], device=device).view(R, C, L)

    def compute() -> torch.Tensor:
        hidden = _option_hidden(decoder, [prompts[i] for _, i in rows], row_options, pad_id,
                                [row_seed(seed, i, k) for k, i in rows], device)  # (R, C, L, H)
        flat = hidden[valid]  # (M, H), M = option tokens over all rows and options
        flat_targets = targets[valid]  # (M,)
        with head_function(head) as apply:  # ZeRO-3: the head's weights gathered once for all chunks
            logp = torch.cat([token_stats(apply(flat[s : s + LM_HEAD_CHUNK]), flat_targets[s : s + LM_HEAD_CHUNK])[0]
                              for s in range(0, flat.shape[0], LM_HEAD_CHUNK)])  # (M,)
        owner = torch.arange(R * C, device=device).view(R, C, 1).expand(R, C, L)[valid]  # (M,) row * C + option
        sums = torch.zeros(R * C, dtype=torch.float64, device=device)
        return sums.index_add_(0, owner, logp.double()).view(R, C)  # (R, C)

    with continued_draws():  # CPU dropout masks of the option rows resume their prompt's random stream
        per_row = with_root_params(model, compute).cpu().numpy()  # (R, C)
    by_pass = per_row.reshape(passes, len(idx), C).transpose(1, 2, 0)  # (B, C, K)
    return list(by_pass)


def supports_shared_prefix(model: nn.Module) -> bool:
    """Whether the model exposes a decoder taking a KV cache and a separate LM head."""
    return decoder_and_head(model) is not None
