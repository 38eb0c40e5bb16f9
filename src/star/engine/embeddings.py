"""Prompt embeddings for diversity strategies: the mean over a prompt's tokens of the decoder's final hidden state.

The final hidden state is the decoder's output (after its final norm), as `hidden_states[-1]` of a plain
forward; the mean is over the prompt's tokens only (padding on either side excluded), in float32. The
scoring passes take it from a forward they already run (generation's prefill, the options' prompt pass, a
teacher-forced pair's prompt positions) with `prompt_means`, a forward hook on the decoder; called with
the adapter disabled, the embeddings are the base model's. Nothing is hooked unless a caller asks.
`scoring.prompt_embeddings` is the one extra forward, for prompts no such pass covered: prompt only, no LM head.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from star.engine.forward import decoder_and_head


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where `mask` (B, T) is set of `hidden` (B, T, H): (B, H), float32."""
    weights = mask.to(device=hidden.device, dtype=torch.float32).unsqueeze(-1)  # (B, T, 1)
    total = (hidden.float() * weights).sum(dim=1)  # (B, H)
    return total / weights.sum(dim=1).clamp_min(1.0)  # (B, H)


class PromptMeans:
    """The masked mean (B, H) of the first decoder output seen over the prompt `mask` (B, T); None until seen.

    The first call is the prompt's own forward (generation's prefill, the options' prompt pass); later
    calls (decoding steps, option tokens against the KV cache) are ignored.
    """

    def __init__(self, mask: torch.Tensor | None) -> None:
        self.mask, self.value, self.seen = mask, None, False

    def hook(self, module: nn.Module, args: tuple, output: object) -> None:
        if self.seen:
            return
        self.seen = True
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]  # (B, T, H)
        if isinstance(hidden, torch.Tensor) and self.mask is not None and hidden.shape[:2] == self.mask.shape:
            self.value = masked_mean(hidden.detach(), self.mask)

    def rows(self, count: int) -> list[np.ndarray | None]:
        """The first `count` rows' embeddings (H,) each, float32 on the CPU; None each when none was captured."""
        if self.value is None:
            return [None] * count
        return list(self.value[:count].cpu().numpy())


@contextlib.contextmanager
def prompt_means(model: nn.Module, mask: torch.Tensor | None, enabled: bool = True) -> Iterator[PromptMeans]:
    """Within the block, capture the prompt means of the model's first decoder forward over `mask` (B, T).

    Disabled (then `mask` may be None: nothing reads it), or for a model without an exposed decoder, nothing is
    hooked and every row stays None.
    """
    means = PromptMeans(mask)
    parts = decoder_and_head(model) if enabled and mask is not None else None
    handle = parts[0].register_forward_hook(means.hook) if parts is not None else None
    try:
        yield means
    finally:
        if handle is not None:
            handle.remove()


def stack_rows(rows: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """(n, d) float32 from per-example rows; None when any row is missing (not captured) or there are none."""
    if not rows or any(r is None for r in rows):
        return None
    return np.stack(rows).astype(np.float32, copy=False)  # (n, d)


def prefix_mask(lengths: Sequence[int], width: int) -> torch.Tensor:
    """(B, width) True at each row's first `lengths[b]` positions: a right-padded row's prompt."""
    return torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]  # (B, width)
