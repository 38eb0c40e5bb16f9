"""Batched, gradient-free uncertainty of the pool: PE and ME over a response, K MC passes.

Output arrays: pe, me of shape (n, K) for n pool examples and K passes (K = 1 when the
passes are deterministic: base model, or MC dropout off).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import collate_pairs, length_batches
from .forward import sequence_scores
from .modeling import mc_dropout


@dataclass
class Uncertainty:
    """PE and ME per example and pass: (n, K) each."""

    pe: np.ndarray
    me: np.ndarray

    def mean(self, measure: str) -> np.ndarray:
        """(n,) the mean over passes of 'pe' or 'me'."""
        return getattr(self, measure).mean(axis=1)


@torch.inference_mode()
def score_pairs(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
                batch_size: int, passes: int = 1, mc: bool = False, seed: int = 0, desc: str = "score",
                show_progress: bool = True) -> Uncertainty:
    """PE/ME of each response given its prompt; with `mc`, K passes with LoRA dropout on.

    The K passes are batched: each batch is repeated K times along the batch axis, so every
    row draws its own dropout mask in one forward.
    """
    passes = passes if mc else 1
    device = next(model.parameters()).device
    n = len(prompts)
    pe = np.zeros((n, passes), dtype=np.float64)
    me = np.zeros((n, passes), dtype=np.float64)
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # MC masks are reproducible for a given (seed, round)
    per_batch = max(1, batch_size // passes)
    try:
        with mc_dropout(model, enabled=mc):
            for idx in tqdm(list(length_batches(lengths, per_batch)), desc=desc, unit="batch", disable=not show_progress, leave=False):
                rows = [i for _ in range(passes) for i in idx]  # (K*B,) pass-major
                batch = collate_pairs([prompts[i] for i in rows], [responses[i] for i in rows], pad_id).to(device)
                b_pe, b_me = sequence_scores(model, batch)  # (K*B,) each
                pe[idx] = b_pe.view(passes, len(idx)).T.double().cpu().numpy()
                me[idx] = b_me.view(passes, len(idx)).T.double().cpu().numpy()
    finally:
        torch.random.set_rng_state(generator_state)
    return Uncertainty(pe, me)
