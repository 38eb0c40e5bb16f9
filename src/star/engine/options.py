"""log p(option | prompt) for a closed answer set, each prompt run once: a shared prefix.

One forward over a batch of prompts fills a KV cache; the cache is repeated over the C options
and one more forward runs every option's tokens against it. The prompt costs one forward, not
C, and the option forward is only as wide as the longest option. Each (example, pass) row keeps
its own seeded LoRA-dropout mask (`row_seed(seed, i, k)`, shared by the C options and continued
over the option tokens with `row_seeds(starts=...)`), so the numbers equal those of C full
(prompt + option) rows scored with the same seeds (scoring.py's full-pair path) to float rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from star.al.seeds import row_seed
from star.engine.forward import LM_HEAD_CHUNK, decoder_and_head, token_stats
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


def _new_cache(decoder: nn.Module) -> tuple[str, object]:
    """(keyword the decoder takes its KV cache by, an empty DynamicCache) across transformers versions."""
    from transformers import DynamicCache

    keyword = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    try:
        return keyword, DynamicCache(config=decoder.config)
    except TypeError:  # older transformers: no config argument
        return keyword, DynamicCache()


def _option_hidden(decoder: nn.Module, prompt_rows: Sequence[list[int]], options: Sequence[list[int]], pad_id: int,
                   seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """Final hidden states (R, C, L, H) that predict option c's token j after prompt row r (L: longest option).

    Position 0 is the prompt's last state; positions 1.. come from the option tokens run against the
    prompt's KV cache, repeated over the C options (row r * C + c).
    """
    ids, mask = (t.to(device) for t in pad_right(prompt_rows, pad_id))  # (R, W) each
    plen = mask.sum(1)  # (R,)
    R, C, L = ids.shape[0], len(options), max(len(o) for o in options)
    keyword, cache = _new_cache(decoder)
    with row_seeds(seeds, plen.tolist()):
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=True, **{keyword: cache}).last_hidden_state
    last = hidden[torch.arange(R, device=device), plen - 1]  # (R, H): predicts each option's first token
    out = last[:, None, None, :].expand(R, C, L, last.shape[-1]).clone()  # (R, C, L, H)
    if L == 1:
        return out
    inputs = [list(o[:-1]) for o in options]  # an option's last token is only predicted, never an input
    opt_ids, opt_mask = (t.to(device) for t in pad_right(inputs, pad_id))  # (C, L-1) each
    cache.batch_repeat_interleave(C)  # row r -> rows r*C .. r*C + C-1
    full_mask = torch.cat([mask.repeat_interleave(C, 0), opt_mask.repeat(R, 1)], dim=1)  # (R*C, W + L-1)
    positions = plen.repeat_interleave(C)[:, None] + torch.arange(L - 1, device=device)  # (R*C, L-1)
    row_lengths = [len(x) for _ in range(R) for x in inputs]
    with row_seeds([s for s in seeds for _ in range(C)], row_lengths, plen.repeat_interleave(C).tolist()):
        tail = decoder(input_ids=opt_ids.repeat(R, 1), attention_mask=full_mask, position_ids=positions,
                       use_cache=True, **{keyword: cache}).last_hidden_state  # (R*C, L-1, H)
    out[:, :, 1:] = tail.view(R, C, L - 1, -1)
    return out


def prefix_option_batch(model: nn.Module, idx: Sequence[int], prompts: Sequence[list[int]],
                        options: Sequence[list[int]], pad_id: int, passes: int, seed: int,
                        device: torch.device) -> list[np.ndarray]:
    """log p(option | prompt) (C, K) of each example of one batch, its K passes stacked on the batch axis."""
    decoder, head = decoder_and_head(model)
    rows = [(k, i) for k in range(passes) for i in idx]  # (R,) pass-major, R = K*B
    C, L = len(options), max(len(o) for o in options)
    targets = pad_right(options, pad_id)[0].to(device)  # (C, L)
    valid = torch.tensor([[j < len(o) for j in range(L)] for o in options], device=device)  # (C, L)

    def compute() -> torch.Tensor:
        hidden = _option_hidden(decoder, [prompts[i] for _, i in rows], options, pad_id,
                                [row_seed(seed, i, k) for k, i in rows], device)  # (R, C, L, H)
        picked = hidden[:, valid]  # (R, M_c, H), M_c = option tokens over all options
        flat_targets = targets[valid].repeat(len(rows))  # (R*M_c,)
        flat = picked.reshape(-1, picked.shape[-1])  # (R*M_c, H)
        with head_function(head) as apply:  # ZeRO-3: the head's weights gathered once for all chunks
            logp = torch.cat([token_stats(apply(flat[s : s + LM_HEAD_CHUNK]), flat_targets[s : s + LM_HEAD_CHUNK])[0]
                              for s in range(0, flat.shape[0], LM_HEAD_CHUNK)])  # (R*M_c,)
        owner = torch.arange(C, device=device)[:, None].expand(C, L)[valid].repeat(len(rows))  # (R*M_c,) option index
        row = torch.arange(len(rows), device=device).repeat_interleave(int(valid.sum()))  # (R*M_c,)
        sums = torch.zeros(len(rows) * C, dtype=torch.float64, device=device)
        return sums.index_add_(0, row * C + owner, logp.double()).view(len(rows), C)  # (R, C)

    with continued_draws():  # CPU dropout masks of the option rows resume their prompt's random stream
        per_row = with_root_params(model, compute).cpu().numpy()  # (R, C)
    by_pass = per_row.reshape(passes, len(idx), C).transpose(1, 2, 0)  # (B, C, K)
    return list(by_pass)


def supports_shared_prefix(model: nn.Module) -> bool:
    """Whether the model exposes a decoder taking a KV cache and a separate LM head."""
    return decoder_and_head(model) is not None
