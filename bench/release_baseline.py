"""The release's pipeline choices, re-implemented faithfully as the baseline of bench/round_speed.py.

What is copied from the authors' release (and what bench/round_speed.py measures against):
- Scoring: one example at a time, teacher-forced on prompt + response, full-vocabulary
  logits at every position, then a Python loop over the response tokens computing a
  full-vocabulary log-softmax per token for PE and ME. K MC passes are K separate forwards.
- Training: every batch padded to a fixed 384 tokens (128 prompt + 256 answer), the
  Hugging Face loss on full logits (B, 384, V) with labels -100 on prompt and padding.
- Evaluation: greedy generation that always produces 256 new tokens (EOS suppressed), for
  every batch, whatever the answer length.

What is deliberately *not* a release choice but shared with `star` so that the comparison
measures the pipeline and nothing else: the token ids (star.engine.batching encoders, same cuts),
the optimizer (AdamW, decay on lora_B only, linear schedule) and the MC-dropout context.
Evaluation batches use the same batch size as ours (conservative: batching helps the baseline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from star.config import TrainConfig
from star.engine.adapter import mc_dropout
from star.engine.precision import autocast_to
from star.engine.training import linear_schedule, make_optimizer

RELEASE_MAX_LEN = 384  # 128 prompt + 256 answer tokens
RELEASE_NEW_TOKENS = 256


# --- scoring ---------------------------------------------------------------------------------

@torch.no_grad()
def score_example(model: nn.Module, prompt: list[int], response: list[int]) -> tuple[float, float]:
    """PE and ME of one response, the release's way: full logits, then a loop over its tokens."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + response], device=device)  # (1, T)
    logits = model(input_ids=ids).logits[0]  # (T, V): the LM head at every position
    pe, me = 0.0, 0.0
    for i, token in enumerate(response):
        logp = torch.log_softmax(logits[len(prompt) - 1 + i].float(), dim=-1)  # (V,)
        pe -= logp[token].item()
        me -= (logp.exp() * logp).sum().item()
    return pe, me


def score_pool(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]],
               passes: int = 1, mc: bool = False, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(pe, me), each (n, K): every example scored alone, K passes as K separate forwards."""
    passes = passes if mc else 1
    pe = np.zeros((len(prompts), passes))
    me = np.zeros((len(prompts), passes))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with mc_dropout(model, enabled=mc):
            for i, (prompt, response) in enumerate(zip(prompts, responses)):
                for k in range(passes):
                    pe[i, k], me[i, k] = score_example(model, prompt, response)
    return pe, me


# --- training --------------------------------------------------------------------------------

def pad_fixed(prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
              length: int = RELEASE_MAX_LEN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), each (B, length): right-padded; labels -100 off the answer."""
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.long)
    labels = torch.full((len(prompts), length), -100, dtype=torch.long)
    for row, (p, r) in enumerate(zip(prompts, responses)):
        seq = (p + r)[:length]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        labels[row, len(p) : len(seq)] = torch.tensor(seq[len(p) :], dtype=torch.long)
    return ids, mask, labels


def train_padded(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
                 config: TrainConfig, seed: int, length: int = RELEASE_MAX_LEN,
                 autocast: torch.dtype | None = None) -> dict[str, float]:
    """The release's training: shuffled batches padded to `length`, HF full-logits loss.

    `autocast` (e.g. bf16, the release's training precision) wraps the forward as ours does.
    """
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    total = math.ceil(len(prompts) / config.batch_size) * config.epochs
    optimizer = make_optimizer(model, config)
    scheduler = linear_schedule(optimizer, total, config.warmup_ratio)
    model.train()
    losses = []
    for _epoch in range(config.epochs):
        order = rng.permutation(len(prompts))
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            ids, mask, labels = pad_fixed([prompts[i] for i in idx], [responses[i] for i in idx], pad_id, length)
            with autocast_to(autocast, device):
                loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    model.eval()
    return {"steps": len(losses), "mean_loss": float(np.mean(losses)), "final_loss": losses[-1]}


# --- evaluation ------------------------------------------------------------------------------

def _left_pad(prompts: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)  # (B, P)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, P)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return ids, mask


@torch.no_grad()
def generate_fixed(model: nn.Module, tokenizer, prompts: Sequence[list[int]], batch_size: int,
                   new_tokens: int = RELEASE_NEW_TOKENS) -> list[str]:
    """Greedy answers in input order, always `new_tokens` long (EOS suppressed until then)."""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = _left_pad(prompts[start : start + batch_size], pad_id)
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
            num_beams=1, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
        )
        texts += tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return texts


def evaluate_fixed(model: nn.Module, tokenizer, task, answers: Sequence[str], prompts: Sequence[list[int]],
                   batch_size: int) -> dict[str, float]:
    """Accuracy of the fixed-length greedy answers (the task's extraction, on the whole 256 tokens)."""
    texts = generate_fixed(model, tokenizer, prompts, batch_size)
    correct = [task.is_correct(task.extract(t), a) for t, a in zip(texts, answers)]
    return {"accuracy": float(np.mean(correct)) if correct else 0.0, "new_tokens": RELEASE_NEW_TOKENS * len(prompts)}
