"""Greedy decoding that drops each row from the batch as soon as its answer is complete.

`model.generate` keeps a finished row in the batch until the longest answer is done, generating padding
for it: in an arithmetic evaluation of 32 rows, where a few answers run to the token limit and most end
after ~25 tokens, about half of all decoded row-steps were such padding. This loop runs the same greedy
steps (prefill, then one token per step against a KV cache, left padding, the positions `generate` derives
from the attention mask) but removes finished rows from the cache, the mask and the batch; it also runs a
prefix all prompts share once (`_prefill`), and writes keys and values into preallocated buffers
(`kv_cache.preallocated_cache`) instead of concatenating the whole cache every step. The answers are
`generate`'s (greedy argmax of the same logits; rows do not interact), up to the float rounding a smaller
matrix product may change. It is used where it is exact in that sense: a plain greedy generation config
(no repetition penalty, banned words, forced tokens, ...), a decoder and LM head exposed, one process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from star.engine.forward import decoder_and_head, token_stats
from star.engine.kv_cache import preallocated_cache

# generation-config fields that change greedy decoding, with their neutral values (anything else: `generate`)
_NEUTRAL: dict[str, tuple] = {
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "min_length": (None, 0),
    "min_new_tokens": (None, 0), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "sequence_bias": (None,),
    "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0), "watermarking_config": (None,),
    "dola_layers": (None,), "remove_invalid_values": (None, False), "renormalize_logits": (None, False),
    "stop_strings": (None,), "max_time": (None,),
}
MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward
COMPACT_FRACTION = 8  # drop finished rows once they are >= 1/8 of the batch (each drop copies the KV cache)


def plain_greedy(model: nn.Module) -> bool:
    """Whether this loop decodes exactly as `generate` would: a decoder and LM head exposed, and a generation
    config with nothing that alters greedy choices (else the caller uses `model.generate`)."""
    if decoder_and_head(model) is None:
        return False
    config = getattr(model, "generation_config", None)
    if config is None:
        return True
    return all(getattr(config, name, None) in neutral for name, neutral in _NEUTRAL.items())


@dataclass
class DecodedRow:
    """One row's greedy answer: token ids (EOS included when produced) and, per token, log p from the step's
    logits (max - logsumexp); with statistics, also log p and entropy from `forward.token_stats`."""

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stat_logp: list[float] = field(default_factory=list)
    stat_entropy: list[float] = field(default_factory=list)


class _Batch:
    """The rows still in the batch: their index in the input, whether each still decodes, the attention mask
    (B, T) and the position (B,) of the token each is fed next."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.rows = torch.arange(mask.shape[0])  # (B,) index into the caller's rows
        self.alive = torch.ones(mask.shape[0], dtype=torch.bool)  # (B,)
        self.mask = mask  # (B, T)
        self.positions = mask.sum(1)  # (B,) a left-padded row's next position is its prompt length

    def live_rows(self) -> list[int]:
        return self.rows[self.alive].tolist()

    def finish(self, done: torch.Tensor, cache: object, tokens: torch.Tensor) -> torch.Tensor:
        """Mark the live rows where `done` (live,) is set finished; drop finished rows from the batch and
        the cache once they are a COMPACT_FRACTION of it (a drop copies the cache). Returns `tokens` (B,)
        for the rows kept."""
        self.alive[self.alive.clone()] = ~done.cpu()
        dead = int((~self.alive).sum())
        if dead and dead * COMPACT_FRACTION >= self.alive.numel():
            index = self.alive.nonzero().squeeze(1)  # (B',)
            cache.batch_select_indices(index.to(self.mask.device))
            self.rows, self.alive = self.rows[index], self.alive[index]
            index = index.to(self.mask.device)
            self.mask, self.positions, tokens = self.mask[index], self.positions[index], tokens[index]
        return tokens

    def feed(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decoder inputs for the next step: `tokens` (B,) at each row's next position; advances the batch."""
        ones = torch.ones((self.mask.shape[0], 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)  # (B, T + 1)
        inputs = {"input_ids": tokens[:, None], "attention_mask": self.mask, "position_ids": self.positions[:, None]}
        self.positions = self.positions + 1
        return inputs


def _logits(decoder: nn.Module, head: nn.Module, keyword: str, cache: object, **inputs: torch.Tensor) -> torch.Tensor:
    """The LM head's logits (B, V) at each row's last position, the decoder run against `cache`."""
    hidden = decoder(use_cache=True, **{keyword: cache}, **inputs).last_hidden_state  # (B, T, H)
    return head(hidden[:, -1])  # (B, V)


def _record(rows: list[DecodedRow], batch: _Batch, logits: torch.Tensor, stats: bool) -> torch.Tensor:
    """Append each live row's greedy token and its log-probabilities; returns every batch row's token (B,)."""
    scores = logits.float()  # (B, V) as `generate` copies them
    top_val, top = scores.max(-1)  # (B,) each: the greedy choice
    alive = batch.alive.to(scores.device)
    logprobs = (top_val - torch.logsumexp(scores, -1))[alive].tolist()
    if stats:
        lp, ent = (t.tolist() for t in token_stats(logits[alive], top[alive]))
    for j, (r, token) in enumerate(zip(batch.live_rows(), top[alive].tolist())):
        row = rows[r]
        row.token_ids.append(token)
        row.logprobs.append(logprobs[j])
        if stats:
            row.stat_logp.append(lp[j])
            row.stat_entropy.append(ent[j])
    return top


def _done(rows: list[DecodedRow], live: list[int], tokens: torch.Tensor, eos: int, tokenizer,
          is_complete: Callable[[str], bool] | None) -> torch.Tensor:
    """(live,) whether each live row ended: EOS, or `is_complete` of its text so far."""
    done = tokens == eos  # (live,)
    if is_complete is not None:
        texts = tokenizer.batch_decode([rows[r].token_ids for r in live], skip_special_tokens=True)
        done |= torch.tensor([is_complete(t) for t in texts], device=done.device)
    return done


def common_prefix(prompts: Sequence[list[int]]) -> int:
    """How many leading tokens every prompt shares, leaving each at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


def left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask (B, P) of token-id rows."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, P)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, P)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask


def _prefill(decoder: nn.Module, head: nn.Module, keyword: str, cache: object, prompts: Sequence[list[int]],
             pad_id: int, device: torch.device, share_prefix: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the prompts into `cache`; returns the logits (B, V) of each row's first answer token and the
    attention mask (B, T) over the cache.

    With `share_prefix`, a prefix common to all rows (a chat template's system turn) is run once and its
    keys and values repeated over the rows: the layout is [prefix][left padding][rest of the prompt], the
    padding masked and every token at the position `generate` would give it.
    """
    shared = common_prefix(prompts) if share_prefix and len(prompts) > 1 else 0
    if shared < MIN_SHARED_PREFIX:
        ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))  # (B, P) each
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)  # (B, P) as `generate` derives them
        return _logits(decoder, head, keyword, cache, input_ids=ids, attention_mask=mask, position_ids=positions), mask
    prefix = torch.tensor([prompts[0][:shared]], device=device)  # (1, c)
    decoder(input_ids=prefix, attention_mask=torch.ones_like(prefix), position_ids=torch.arange(shared, device=device)[None],
            use_cache=True, **{keyword: cache})
    cache.batch_repeat_interleave(len(prompts))
    ids, rest = (t.to(device) for t in left_pad([p[shared:] for p in prompts], pad_id))  # (B, S) each
    mask = torch.cat([torch.ones((len(prompts), shared), dtype=rest.dtype, device=device), rest], dim=1)  # (B, c + S)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, shared:]  # (B, S)
    return _logits(decoder, head, keyword, cache, input_ids=ids, attention_mask=mask, position_ids=positions), mask


def _any_training(model: nn.Module) -> bool:
    """Whether any module is in training mode (a dropout drawing masks: one prefix pass cannot serve all rows)."""
    return any(m.training for m in model.modules())


def greedy_decode(model: nn.Module, tokenizer, prompts: Sequence[list[int]], pad_id: int, max_new_tokens: int,
                  is_complete: Callable[[str], bool] | None = None, stats: bool = False,
                  share_prefix: bool = True) -> list[DecodedRow]:
    """Greedy answers to prompts (token-id rows), each ended by EOS, `is_complete(text)` or `max_new_tokens`;
    finished rows leave the batch, and a prefix all prompts share is run once (`share_prefix`; not while any
    module is in training mode: one dropout draw would serve every row). Use where `plain_greedy(model)` holds."""
    decoder, head = decoder_and_head(model)
    keyword, cache = preallocated_cache(decoder, max(len(p) for p in prompts) + max_new_tokens if prompts else 0)
    rows = [DecodedRow() for _ in prompts]
    if max_new_tokens <= 0 or not prompts:
        return rows
    device = next(model.parameters()).device
    logits, mask = _prefill(decoder, head, keyword, cache, prompts, pad_id, device, share_prefix and not _any_training(model))
    batch = _Batch(mask)
    for step in range(max_new_tokens):
        live = batch.live_rows()
        tokens = _record(rows, batch, logits, stats)  # (B,)
        done = _done(rows, live, tokens[batch.alive.to(tokens.device)], tokenizer.eos_token_id, tokenizer,
                     is_complete)  # (live,)
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        tokens = batch.finish(done, cache, tokens)
        logits = _logits(decoder, head, keyword, cache, **batch.feed(tokens))
    return rows
