"""LoRA dropout whose mask for each example comes from that example's own seed.

With plain `nn.Dropout`, the mask an example gets depends on which other examples share its
batch, in what order, and on which process. Seeding each row makes training and MC-dropout
scoring independent of batch size, length bucketing and the number of processes, so a
resumed, re-batched or multi-process run reproduces a single-process run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
from torch import nn

# (seeds (B,), lengths (B,)) of the rows in the current forward, or None for plain dropout.
_ROWS: ContextVar[tuple[Sequence[int], Sequence[int]] | None] = ContextVar("star_row_seeds", default=None)
_MIX = 0x9E3779B97F4A7C15


def _mask_seed(row_seed: int, layer_key: int) -> int:
    return (row_seed * 1_000_003 + layer_key * 7919 + _MIX) % (2**63 - 1)


class RowSeededDropout(nn.Module):
    """Inverted dropout with p; in a `row_seeds` context each row's mask is drawn from its own seed."""

    def __init__(self, p: float, layer_key: int) -> None:
        super().__init__()
        self.p = p
        self.layer_key = layer_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        rows = _ROWS.get()
        if rows is None or x.dim() != 3 or x.shape[0] != len(rows[0]):
            return nn.functional.dropout(x, self.p, training=True)
        # One uint8 keep-mask, built on the CPU and moved once: autograd keeps 1 byte per element
        # (not a float mask's 4), and a multiply by uint8 is ~8x faster on a CPU than
        # masked_fill with a boolean mask (the values are identical).
        keep = torch.ones(x.shape, dtype=torch.uint8)  # (B, T, d); padding beyond a row's length stays kept
        for b, (seed, length) in enumerate(zip(*rows)):
            g = torch.Generator(device="cpu").manual_seed(_mask_seed(int(seed), self.layer_key))
            draw = torch.rand((int(length), x.shape[2]), generator=g)  # (L, d), independent of padding
            torch.ge(draw, self.p, out=keep[b, : int(length)])
        return x * keep.to(x.device) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, layer_key={self.layer_key}"


def install(model: nn.Module) -> int:
    """Replace every LoRA dropout (nn.Dropout in peft's `lora_dropout`) by a RowSeededDropout."""
    from peft.tuners.lora import LoraLayer

    count = 0
    for key, layer in enumerate(m for m in model.modules() if isinstance(m, LoraLayer)):
        for name, module in list(layer.lora_dropout.items()):
            if isinstance(module, nn.Dropout):
                layer.lora_dropout[name] = RowSeededDropout(module.p, key)
                count += 1
    return count


@contextlib.contextmanager
def row_seeds(seeds: Sequence[int], lengths: Sequence[int]) -> Iterator[None]:
    """Within this context, row b of each forward uses seed `seeds[b]` over its first `lengths[b]` positions."""
    token = _ROWS.set((list(seeds), list(lengths)))
    try:
        yield
    finally:
        _ROWS.reset(token)
