"""Token ids for (prompt, response) pairs and length-bucketed, dynamically padded batches.

Prompts use the tokenizer's chat template when it has one (instruct models), else a plain
'Question/Answer' frame; a task's system prompt is the template's system message (or a line
above the frame). Responses end with EOS so the model learns to stop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

PLAIN_FRAME = "Question: {prompt}\nAnswer: "


def chat_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    """The chat messages of one prompt: the system message (if any), then the user's."""
    system_part = [{"role": "system", "content": system}] if system else []
    return system_part + [{"role": "user", "content": prompt}]


def prompt_text(tokenizer, prompt: str, system: str | None = None) -> str:
    """The full prompt string the model sees before its answer."""
    if getattr(tokenizer, "chat_template", None):
        messages = chat_messages(prompt, system)
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return (f"{system}\n\n" if system else "") + PLAIN_FRAME.format(prompt=prompt)


ENCODE_CHUNK = 1024  # texts per tokenizer call: one call over a 100k pool held ~2 GB of encodings at once


def encode_prompts(tokenizer, prompts: Sequence[str], max_tokens: int,
                   system: str | None = None) -> list[list[int]]:
    """Prompt ids, cut from the left to `max_tokens` so the answer cue at the end survives."""
    out: list[list[int]] = []
    for start in range(0, len(prompts), ENCODE_CHUNK):  # a chunk at a time: the tokenizer's per-token
        texts = [prompt_text(tokenizer, p, system) for p in prompts[start:start + ENCODE_CHUNK]]  # records stay small
        out.extend(list(x[-max_tokens:]) for x in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return out


def encode_responses(tokenizer, responses: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Response ids + EOS, cut from the right to `max_tokens` (EOS kept only when it fits)."""
    ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"] if responses else []
    eos = tokenizer.eos_token_id
    return [(list(x) + [eos])[:max_tokens] for x in ids]


@dataclass
class PairBatch:
    """Right-padded prompt+response rows and where the response tokens are predicted.

    input_ids, attention_mask: (B, T). predict_mask: (B, T) True at positions whose logits
    predict a response token; targets: (M,) those tokens in row-major order; rows: (M,) row index.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    predict_mask: torch.Tensor
    targets: torch.Tensor
    rows: torch.Tensor

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.predict_mask, self.targets, self.rows)))

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def collate_pairs(prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int) -> PairBatch:
    """Pad prompt+response rows on the right; the response must be non-empty."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    predict = torch.zeros((len(seqs), width), dtype=torch.bool)  # (B, T)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        input_ids[i, : len(s)] = torch.tensor(s)
        attention[i, : len(s)] = 1
        predict[i, len(p) - 1 : len(s) - 1] = True  # logits at t predict token t+1
    shifted = torch.roll(input_ids, shifts=-1, dims=1)  # (B, T): token t+1 at t
    targets = shifted[predict]  # (M,)
    rows = torch.arange(len(seqs)).unsqueeze(1).expand_as(predict)[predict]  # (M,)
    return PairBatch(input_ids, attention, predict, targets, rows)


def length_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator | None = None) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (less padding).

    Without `rng`: sorted by length, longest first (deterministic, for inference). With `rng`:
    shuffled, bucketed in windows of 16 batches, and the batch order shuffled (for training).
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    if rng is None:
        for start in range(0, len(order), batch_size):
            yield [int(i) for i in order[start : start + batch_size]]
        return
    perm = rng.permutation(len(lengths))
    window = batch_size * 16
    batches: list[list[int]] = []
    for start in range(0, len(perm), window):
        chunk = perm[start : start + window]
        chunk = chunk[np.argsort(-np.asarray(lengths)[chunk], kind="stable")]
        batches.extend([int(i) for i in chunk[s : s + batch_size]] for s in range(0, len(chunk), batch_size))
    for j in rng.permutation(len(batches)):
        yield batches[int(j)]
