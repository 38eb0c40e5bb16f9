"""Measuring helpers for bench/round_speed.py: phase timing + peak memory, matmul ceiling, FLOPs.

Peak memory per phase, comparable across phases run in one process:
- CPU: before a phase, garbage is collected, glibc's free heap pages are returned to the OS
  (malloc_trim) and the kernel's peak-RSS mark is reset to the current RSS
  (`echo 5 > /proc/self/clear_refs`); after it, VmHWM is the phase's peak RSS. We report
  the peak above the RSS at the phase's start ("extra MB": what the phase itself needed).
- CUDA: torch.cuda.max_memory_allocated above memory_allocated at the start.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn

from star.engine.precision import bf16_kind
from star.loop.provenance import cpu_model

T = TypeVar("T")


# --- time and memory -------------------------------------------------------------------------

def _proc_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class Measurement:
    """One timed phase: wall seconds, peak memory above its start and absolute (MB)."""

    seconds: float = 0.0
    extra_mb: float | None = None
    peak_mb: float | None = None
    memory_kind: str = "cpu-rss"
    info: dict = field(default_factory=dict)


@contextlib.contextmanager
def measure(device: torch.device) -> Iterator[Measurement]:
    """Time a block and record its peak memory (see the module docstring)."""
    m = Measurement(memory_kind="cuda-allocated" if device.type == "cuda" else "cpu-rss")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    else:
        resettable = _reset_cpu_peak()
        start_kb = _proc_kb("VmRSS") or 0
    start = time.perf_counter()
    yield m
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    m.seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        m.peak_mb, m.extra_mb = peak / 2**20, (peak - start_bytes) / 2**20
    elif resettable and (hwm := _proc_kb("VmHWM")) is not None:
        m.peak_mb, m.extra_mb = hwm / 1024, (hwm - start_kb) / 1024


def timed(device: torch.device, fn: Callable[[], T], repeats: int = 1,
          before: Callable[[], object] | None = None) -> tuple[Measurement, T]:
    """Run `fn` `repeats` times (each after `before`): the fastest time, the largest peak, the last result."""
    best: Measurement | None = None
    result = None
    for _ in range(max(1, repeats)):
        if before is not None:
            before()
        with measure(device) as m:
            result = fn()
        if best is None:
            best = m
        else:
            best.seconds = min(best.seconds, m.seconds)
            best.extra_mb = max(filter(None.__ne__, (best.extra_mb, m.extra_mb)), default=None)
            best.peak_mb = max(filter(None.__ne__, (best.peak_mb, m.peak_mb)), default=None)
    best.info = {"repeats": max(1, repeats)}
    return best, result


# --- hardware ceiling ------------------------------------------------------------------------

def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, seconds: float = 0.6) -> float:
    """Best-of-runs GFLOP/s of an (m x k) @ (k x n) product."""
    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    best, spent = float("inf"), 0.0
    for _ in range(2):
        a @ b  # warm-up
    while spent < seconds:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2 * m * k * n / best / 1e9


def ceiling(hidden: int, intermediate: int, vocab: int, device: torch.device,
            dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16), rows: int = 1024) -> dict:
    """GFLOP/s per dtype for model-shaped products and a large square; 'best' is the ceiling."""
    shapes = {
        f"({rows}x{hidden})@({hidden}x{intermediate}) mlp up": (rows, hidden, intermediate),
        f"({rows}x{intermediate})@({intermediate}x{hidden}) mlp down": (rows, intermediate, hidden),
        f"({rows}x{hidden})@({hidden}x{vocab}) lm head": (rows, hidden, vocab),
        "2048^3 square": (2048, 2048, 2048),
    }
    out = {}
    for dtype in dtypes:
        rates = {name: round(matmul_gflops(*shape, dtype, device), 1) for name, shape in shapes.items()}
        out[str(dtype).removeprefix("torch.")] = {"shapes": rates, "best": max(rates.values())}
    return out


# --- FLOP accounting -------------------------------------------------------------------------

@dataclass
class ModelFlops:
    """Useful FLOPs of a decoder: 2 x params used per token, attention, LM head where needed.

    body: every parameter used at every position except the embedding and LM head (decoder
    linears, LoRA, norms); head: the LM head's V x d; attention: 2 x 2 x layers x width per
    (query, key) pair with key <= query (causal half only).
    """

    body: int
    head: int
    layers: int
    width: int

    @classmethod
    def of(cls, model: nn.Module) -> ModelFlops:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = base.config
        head = base.get_output_embeddings().weight.numel()
        body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
        width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
        return cls(body, head, cfg.num_hidden_layers, width)

    def attention(self, context: int) -> float:
        return 4.0 * self.layers * self.width * context * (context + 1) / 2

    def forward(self, lengths: Sequence[int], predicted: int) -> float:
        """FLOPs of one forward over sequences of `lengths` with the head at `predicted` positions."""
        return sum(2.0 * self.body * t + self.attention(t) for t in lengths) + 2.0 * self.head * predicted

    def generation(self, prompt_lengths: Sequence[int], new_lengths: Sequence[int]) -> float:
        """Prefill (head at the last position) + one token per step with a KV cache."""
        total = 0.0
        for p, g in zip(prompt_lengths, new_lengths):
            total += self.forward([p], 1)
            total += g * (2.0 * self.body + 2.0 * self.head) + 4.0 * self.layers * self.width * sum(range(p + 1, p + g + 1))
        return total


# --- machine ---------------------------------------------------------------------------------

def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    import peft
    import transformers

    info = {
        "cpu": cpu_model(), "bf16": bf16_kind(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
