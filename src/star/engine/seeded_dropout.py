"""LoRA dropout whose mask for each example comes from that example's own seed.

With plain `nn.Dropout`, the mask an example gets depends on which other examples share its
batch, in what order, and on which process. Seeding each row makes training and MC-dropout
scoring independent of batch size, length bucketing and the number of processes, so a
resumed, re-batched or multi-process run reproduces a single-process run.

Where the masks are drawn depends on the device. On a CPU each row draws from torch's CPU
generator seeded with the row's seed. On an accelerator that would be a disaster: it is one
random number per input element of every LoRA layer, drawn serially on the host at ~10 ns each
(measured here), so ~45 s of host time per forward of 8 rows of 512 tokens through a 7B model
with LoRA on all 7 projections. There, each mask is a
counter-based hash of (row seed, layer, position, feature), computed on the device with
integer tensor ops: no host work, no per-row loop, and the same values on every device.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn

# (seeds (B,), lengths (B,), starts (B,)) of the rows in the current forward, or None for plain dropout.
_Rows = tuple[Sequence[int], Sequence[int], Sequence[int]]
_ROWS: ContextVar[_Rows | None] = ContextVar("star_row_seeds", default=None)
# CPU generator states at the end of each row's draw, by (mask seed, position), within `continued_draws()`:
# a row continued from that position (a KV-cached prefix) resumes the stream instead of re-drawing the prefix.
_STATES: ContextVar[dict[tuple[int, int], torch.Tensor] | None] = ContextVar("star_draw_states", default=None)
_MIX = 0x9E3779B97F4A7C15


def _mask_seed(row_seed: int, layer_key: int) -> int:
    return (row_seed * 1_000_003 + layer_key * 7919 + _MIX) % (2**63 - 1)


_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32) (int64 tensor or int) and c < 2**32, without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """The 'lowbias32' integer hash (C. Wellons) of values in [0, 2**32) (int64 tensor or int): exact on every device."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _row_key(mask_seed: int) -> int:
    """A 32-bit key of a row's 63-bit mask seed."""
    return (mask_seed ^ _hash32(mask_seed >> 32)) & _M32


def keep_hashed(shape: torch.Size, seeds: Sequence[int], lengths: Sequence[int], layer_key: int, p: float,
                device: torch.device | str, starts: Sequence[int] | None = None) -> torch.Tensor:
    """(B, T, d) uint8 keep-mask on `device`: row b keeps element (t, j), t < lengths[b], when
    U = (hash(hash((t + starts[b]) * d + j) ^ key_b) >> 8) / 2**24 >= p; positions from lengths[b] on are kept."""
    B, T, d = shape
    keys = torch.tensor([_row_key(_mask_seed(int(s), layer_key)) for s in seeds], dtype=torch.long, device=device)
    if starts is None or not any(starts):
        counter = _hash32(torch.arange(T * d, dtype=torch.long, device=device)).view(1, T, d)  # (1, T, d)
    else:  # each row continues its own sequence from token position starts[b]
        pos = torch.arange(T, device=device).view(1, T) + torch.tensor(list(starts), device=device).view(B, 1)  # (B, T)
        counter = _hash32(pos.unsqueeze(-1) * d + torch.arange(d, device=device).view(1, 1, d))  # (B, T, d)
    bits = _hash32(counter ^ keys.view(B, 1, 1)) >> 8  # (B, T, d), 24 uniform bits
    keep = bits >= math.ceil(p * (1 << 24))  # U >= p, U = bits / 2**24
    pad = torch.arange(T, device=device).view(1, T) >= torch.tensor(list(lengths), device=device).view(B, 1)  # (B, T)
    return (keep | pad.unsqueeze(-1)).to(torch.uint8)


def keep_cpu(shape: torch.Size, seeds: Sequence[int], lengths: Sequence[int], layer_key: int, p: float,
             starts: Sequence[int] | None = None) -> torch.Tensor:
    """(B, T, d) uint8 keep-mask, each row drawn from torch's CPU generator seeded by the row; a row
    with starts[b] > 0 takes the draw's positions starts[b] .. starts[b] + lengths[b] (a continued sequence).

    The rows' draws are independent streams, so they run on torch's CPU threads at once (the
    generator is serial, ~2.4 ns a number here; the model's own threads idle meanwhile): the same
    masks, ~10% off a bf16 training step on 2 cores.
    """
    keep = torch.empty(shape, dtype=torch.uint8)  # (B, T, d)
    states = _STATES.get()  # read here: a context variable is not seen by the pool's threads
    inference = torch.is_inference_mode_enabled()  # thread-local too: `keep` is an inference tensor under it

    def draw_row(b: int) -> None:
        with torch.inference_mode(inference):
            _draw_into(keep, b, seeds, lengths, starts, layer_key, p, states)

    pool = _draw_pool() if sum(int(n) for n in lengths) * shape[2] >= _THREADED_DRAW_MIN else None
    if pool is None or len(seeds) < 2:
        for b in range(len(seeds)):
            draw_row(b)
    else:
        list(pool.map(draw_row, range(len(seeds))))  # list(): re-raises a row's exception here
    return keep


def _draw_into(keep: torch.Tensor, b: int, seeds: Sequence[int], lengths: Sequence[int],
               starts: Sequence[int] | None, layer_key: int, p: float,
               states: dict[tuple[int, int], torch.Tensor] | None) -> None:
    """Row b of the (B, T, d) uint8 `keep`: its seeded draw over its length, kept (1) beyond it."""
    start, length = int(starts[b]) if starts is not None else 0, int(lengths[b])
    keep[b, length:] = 1  # padding beyond a row's length stays kept
    if length == 0:
        return
    key = _mask_seed(int(seeds[b]), layer_key)
    g = torch.Generator(device="cpu")
    saved = states.get((key, start)) if states is not None and start else None
    if saved is not None:  # the stream continues where this row's prefix ended
        g.set_state(saved)
        draw = torch.rand((length, keep.shape[2]), generator=g)  # (L, d)
    else:
        g.manual_seed(key)
        draw = torch.rand((start + length, keep.shape[2]), generator=g)[start:]  # (L, d), independent of padding
    if states is not None:
        states[(key, start + length)] = g.get_state()
    torch.ge(draw, p, out=keep[b, :length])


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (process id, threads, pool)
# Numbers a mask must draw before its rows go to the pool: below it (a decoding step's one token a
# row) a pool's hand-off (~50 us) costs more than it saves (~150 us of drawing at 2**16).
_THREADED_DRAW_MIN = 1 << 16


def _draw_pool() -> ThreadPoolExecutor | None:
    """A thread pool as wide as torch's CPU threads (None for one thread), remade when that number changes
    and in a forked child, which inherits the pool but not its threads (work sent to it would wait forever)."""
    global _POOL
    threads, pid = torch.get_num_threads(), os.getpid()
    if threads < 2:
        return None
    if _POOL is None or _POOL[:2] != (pid, threads):
        if _POOL is not None and _POOL[0] == pid:
            _POOL[2].shutdown(wait=False)
        _POOL = (pid, threads, ThreadPoolExecutor(threads, thread_name_prefix="star-dropout-draws"))
    return _POOL[2]


class _ScaledKeep(torch.autograd.Function):
    """x * keep * scale with the uint8 keep-mask saved for backward (1 byte an element, not a float
    mask's 4) and the scale applied in place: one output allocation, not two. The same operations
    in the same order as `x * keep * scale`, so the same bits, forward and backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.mul(x, keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(ctx.scale).mul_(keep), None, None


def masks_on_device(device: torch.device) -> bool:
    """Whether masks for tensors on `device` are hashed there (accelerators) rather than drawn on the CPU."""
    return device.type != "cpu"


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
        # A uint8 keep-mask: a multiply by uint8 is ~8x faster on a CPU than masked_fill with a boolean mask.
        seeds, lengths, starts = rows
        if masks_on_device(x.device):
            keep = keep_hashed(x.shape, seeds, lengths, self.layer_key, self.p, x.device, starts)
        else:
            keep = keep_cpu(x.shape, seeds, lengths, self.layer_key, self.p, starts)
        return _ScaledKeep.apply(x, keep.to(x.device), 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, layer_key={self.layer_key}"


def install(model: nn.Module) -> int:
    """Replace every LoRA dropout (nn.Dropout in peft's `lora_dropout`) by a RowSeededDropout.

    peft's nn.Identity for lora.dropout=0 becomes a RowSeededDropout with p = 0 (the identity too),
    so MC-dropout scoring can still use a rate of its own (`al.mc_dropout_p`).
    """
    from peft.tuners.lora import LoraLayer

    count = 0
    for key, layer in enumerate(m for m in model.modules() if isinstance(m, LoraLayer)):
        for name, module in list(layer.lora_dropout.items()):
            if isinstance(module, (nn.Dropout, nn.Identity)):
                layer.lora_dropout[name] = RowSeededDropout(getattr(module, "p", 0.0), key)
                count += 1
    return count


@contextlib.contextmanager
def continued_draws() -> Iterator[None]:
    """Within this context, CPU masks of rows continued from a position (`row_seeds(starts=...)`) resume the
    generator where the same row's earlier draw ended, instead of re-drawing its prefix (same masks, less work)."""
    token = _STATES.set({})
    try:
        yield
    finally:
        _STATES.reset(token)


@contextlib.contextmanager
def row_seeds(seeds: Sequence[int], lengths: Sequence[int], starts: Sequence[int] | None = None) -> Iterator[None]:
    """Within this context, row b of each forward uses seed `seeds[b]` over its first `lengths[b]` positions.

    `starts[b]`: the row continues a sequence (a KV-cached prefix) from that token position, so it gets the
    mask the same tokens would get in one forward over the whole sequence.
    """
    token = _ROWS.set((list(seeds), list(lengths), list(starts) if starts is not None else [0] * len(seeds)))
    try:
        yield
    finally:
        _ROWS.reset(token)
