"""Batched greedy generation with a KV cache that stops each row once its answer is complete.

Decoding runs in `decode.greedy_decode` (finished rows leave the batch, a shared prompt prefix is run once)
wherever that is exact; `model.generate` otherwise (sharded models, generation configs that alter greedy
choices, models without an exposed decoder and LM head).

With `stats=True` it also scores each answer while decoding: PE = -sum log p(token) and ME = sum of the
step entropies, from the LM head's own logits at every step (what a teacher-forced pass over the same ids
computes, in the same fp32 statistics), so the deterministic scores of a greedy answer need no second forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import LogitsProcessorList

from star.engine.batching import length_batches
from star.engine.decode import DecodedRow, greedy_decode, left_pad, plain_greedy
from star.engine.embeddings import prompt_means
from star.engine.forward import decoder_and_head, token_stats
from star.parallel import zero3
from star.parallel.distributed import Dist


@dataclass
class Generation:
    """One greedy answer: its text, token ids (EOS included when produced) and their log-probs.

    pe, me: PE and ME of exactly `token_ids` from the decoding's own step logits (`stats=True`); None when
    not recorded (stats off, an empty answer, or a model whose LM head is not exposed).
    embedding: the prompt's embedding (d,) from the prefill (`embed=True`, embeddings.py); None when not captured.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    pe: float | None = None
    me: float | None = None
    embedding: np.ndarray | None = None


class _AnswerComplete:
    """Stopping criterion: a row is done once `is_complete(decoded new text)` holds; `ended[row]` is how many
    tokens it had then, so the padding `generate` adds while other rows go on is not taken for its answer
    (with pad == EOS it would read as an EOS the model never chose)."""

    def __init__(self, tokenizer, prompt_width: int, is_complete: Callable[[str], bool]) -> None:
        self.tokenizer, self.width, self.is_complete = tokenizer, prompt_width, is_complete
        self.ended: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.width :]  # (B, t)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        done = [self.is_complete(t) for t in texts]
        for row in (r for r, d in enumerate(done) if d and r not in self.ended):
            self.ended[row] = new.shape[1]
        return torch.tensor(done, device=input_ids.device)


class _StepLogprobs:
    """Logits processor keeping, per greedy step, what log p(chosen token) needs: (B,) numbers only.

    Greedy decoding picks the argmax, or the pad token for a row already finished, so the
    step's logsumexp, max and pad-token score give every chosen token's log-probability
    without keeping the (B, V) scores of every step (B x steps x V floats: 0.4 GB for 32 rows
    of 64 tokens with a 49k vocabulary, then copied twice by stack and log_softmax).
    """

    def __init__(self, pad_id: int) -> None:
        self.pad_id, self.steps = pad_id, []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        s = scores.float()  # (B, V)
        self.steps.append(torch.stack([torch.logsumexp(s, -1), s.max(-1).values, s[:, self.pad_id]]))  # (3, B)
        return scores

    def logprobs(self, new: torch.Tensor) -> torch.Tensor:
        """(B, t) log-probabilities of the generated tokens `new` (B, t)."""
        if new.shape[1] == 0:
            return torch.zeros(new.shape)
        lse, top, pad = torch.stack(self.steps[: new.shape[1]], dim=2).cpu()  # each (B, t)
        return torch.where(new == self.pad_id, pad, top) - lse


class _StepStats:
    """Logits processor + LM-head hook: per greedy step, log p(greedy token), log p(pad) and the entropy, (B,) each.

    They come from the head's output (the logits a teacher-forced pass takes, before any generation-config
    processor such as a repetition penalty) through `forward.token_stats` (fp32, autocast off). The
    token chosen is the argmax of the processed scores (this processor runs last and changes nothing),
    or the pad token for a row already finished; `per_token` picks the right one once the ids are known.
    """

    def __init__(self, head: nn.Module, pad_id: int) -> None:
        self.pad_id, self.logits, self.steps, self.complete = pad_id, None, [], True
        self.handle = head.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.logits = output[:, -1] if isinstance(output, torch.Tensor) and output.dim() == 3 else None  # (B, V)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        raw, self.logits = self.logits, None
        if raw is None or raw.shape != scores.shape:  # the head did not run as expected: no fused statistics
            self.complete = False
            return scores
        top = scores.argmax(-1)  # (B,) HF's greedy choice
        lp_top, ent = token_stats(raw, top)  # (B,) each, fp32
        gap = raw[:, self.pad_id].float() - raw.gather(1, top.unsqueeze(1)).squeeze(1).float()  # (B,) logit(pad) - logit(top)
        self.steps.append(torch.stack([lp_top, lp_top + gap, ent]))  # (3, B)
        return scores

    def per_token(self, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """log p and entropy (B, t) of the generated tokens `new` (B, t); None if a step went unrecorded."""
        if not self.complete or len(self.steps) < new.shape[1]:
            return None
        if new.shape[1] == 0:
            return torch.zeros(new.shape), torch.zeros(new.shape)
        top, pad, ent = torch.stack(self.steps[: new.shape[1]], dim=2).cpu()  # each (B, t)
        return torch.where(new == self.pad_id, pad, top), ent

    def close(self) -> None:
        self.handle.remove()


def _fused(steps: tuple[torch.Tensor, torch.Tensor] | None, row: int, length: int) -> tuple[float | None, float | None]:
    """(PE, ME) of a row's first `length` tokens from its step statistics; (None, None) without them."""
    if steps is None or length == 0:
        return None, None
    logp, ent = steps[0][row, :length].double(), steps[1][row, :length].double()  # (length,) each
    return float(-logp.sum()), float(ent.sum())


def _trim(ids: list[int], logprobs: list[float], eos_id: int, pad_id: int) -> tuple[list[int], list[float]]:
    """Cut a generated row after its first EOS (kept) or before trailing padding."""
    if eos_id in ids:
        end = ids.index(eos_id) + 1
        return ids[:end], logprobs[:end]
    end = len(ids)
    while end > 0 and ids[end - 1] == pad_id and pad_id != eos_id:
        end -= 1
    return ids[:end], logprobs[:end]


def generate_batch(model: nn.Module, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int,
                   is_complete: Callable[[str], bool] | None = None, synced: bool = False,
                   stats: bool = False, embed: bool = False) -> list[Generation]:
    """Greedy answers for one batch of prompt ids; `stats`: with their PE and ME (`Generation.pe`, `.me`);
    `embed`: with each prompt's embedding from the prefill (`Generation.embedding`, left padding excluded).

    `synced`: with sharded parameters (FSDP, ZeRO-3), every process keeps stepping until all are done.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if not synced and plain_greedy(model):  # embeddings are taken from a whole-prompt prefill: no shared prefix
        mask = left_pad(prompts, pad_id)[1] if embed else None  # (B, P): the prefill's own layout; decode pads
        with zero3.inference(model), prompt_means(model, mask, enabled=embed) as means:
            rows = greedy_decode(model, tokenizer, prompts, pad_id, max_new_tokens, is_complete, stats,
                                 share_prefix=not embed)
        return [Generation(tokenizer.decode(r.token_ids, skip_special_tokens=True), r.token_ids, r.logprobs,
                           *_summed(r, stats), e) for r, e in zip(rows, means.rows(len(rows)))]
    ids, mask = left_pad(prompts, pad_id)  # (B, P) each
    return _generate_hf(model, tokenizer, ids, mask, pad_id, max_new_tokens, is_complete, synced, stats, embed)


def _summed(row: DecodedRow, stats: bool) -> tuple[float | None, float | None]:
    """(PE, ME) of a decoded row from its per-token statistics, as `_fused` sums them; (None, None) without."""
    if not stats or not row.token_ids:
        return None, None
    logp, ent = torch.tensor(row.stat_logp, dtype=torch.float64), torch.tensor(row.stat_entropy, dtype=torch.float64)
    return float(-logp.sum()), float(ent.sum())


def _generate_hf(model: nn.Module, tokenizer, ids: torch.Tensor, mask: torch.Tensor, pad_id: int,
                 max_new_tokens: int, is_complete: Callable[[str], bool] | None, synced: bool, stats: bool,
                 embed: bool) -> list[Generation]:
    """`generate_batch` through `model.generate`: sharded models, and generation configs `decode` does not follow."""
    device = next(model.parameters()).device
    stop = [] if is_complete is None else [_AnswerComplete(tokenizer, ids.shape[1], is_complete)]
    record = _StepLogprobs(pad_id)
    parts = decoder_and_head(model) if stats else None
    fused = _StepStats(parts[1], pad_id) if parts is not None else None
    try:
        with zero3.inference(model), prompt_means(model, mask, enabled=embed) as means:
            out = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1,
                pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id, stopping_criteria=stop,
                logits_processor=LogitsProcessorList([record] + ([fused] if fused else [])), synced_gpus=synced,
            )  # (B, P + t)
            new = out[:, ids.shape[1] :].cpu()  # (B, t)
            logp = record.logprobs(new)  # (B, t)
    finally:
        if fused is not None:
            fused.close()
    steps = fused.per_token(new) if fused is not None else None  # (B, t) log p and entropy, or None
    embeddings = means.rows(new.shape[0])  # (d,) each, or None each
    results = []
    for row in range(new.shape[0]):
        end = stop[0].ended.get(row) if stop else None  # a row the task's check ended: its tokens up to then
        token_ids, lps = _trim(new[row, :end].tolist(), logp[row, :end].tolist(), tokenizer.eos_token_id, pad_id)
        pe, me = _fused(steps, row, len(token_ids))  # the trimmed ids are a prefix of the row's steps
        results.append(Generation(tokenizer.decode(token_ids, skip_special_tokens=True), token_ids, lps, pe, me,
                                  embeddings[row]))
    return results


def generate(model: nn.Module, tokenizer, prompts: Sequence[list[int]], max_new_tokens: int, batch_size: int,
             is_complete: Callable[[str], bool] | None = None, desc: str = "generate",
             show_progress: bool = True, *, dist: Dist = Dist(), stats: bool = False,
             embed: bool = False) -> list[Generation]:
    """Greedy answers for all prompts, length-bucketed into batches, in input order (`stats`: with PE and ME;
    `embed`: with the prompts' embeddings from the prefill).

    Whole batches are shared out across `dist`'s processes in a multi-process run and gathered back.
    """
    batches = list(length_batches([len(p) for p in prompts], batch_size))
    return dist.map_batches(batches, lambda batch: generate_batch(model, tokenizer, [prompts[i] for i in batch],
                                                                  max_new_tokens, is_complete, synced=dist.sharded,
                                                                  stats=stats, embed=embed),
                            desc, show_progress)


def token_char_ends(tokenizer, token_ids: Sequence[int]) -> list[int]:
    """End offset, in the decoded text, of each token (by decoding growing prefixes)."""
    return [len(tokenizer.decode(list(token_ids[: i + 1]), skip_special_tokens=True)) for i in range(len(token_ids))]
