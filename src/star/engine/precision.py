"""Which dtype the matmuls of a phase run in: bf16 autocast where the hardware makes it pay.

Weights stay in the model's dtype (fp32 on a CPU), LoRA weights and optimizer state in fp32,
and statistics (log-softmax, entropy, loss) are computed in fp32; only the matmuls run in bf16.

Autocast keeps its casts only of weights that require grad, so in a decoding loop it re-casts every
frozen weight at every step. For scoring on a CPU (`scoring_precision`) the frozen Linear weights are
therefore cast once for the phase (`frozen_weights_cast`): the same casts, so the same bits, at the
cost of a bf16 copy of those weights while the phase runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from star.parallel.params import is_sharded


def bf16_kind(device: torch.device) -> str:
    """The device's fast bf16 matmul path: 'cuda', 'amx', 'avx512_bf16', or 'none' (bf16 would not pay)."""
    if device.type == "cuda":
        return "cuda" if torch.cuda.is_bf16_supported() else "none"
    if device.type == "cpu":
        if torch.cpu._is_amx_tile_supported():
            return "amx"
        return "avx512_bf16" if torch.cpu._is_avx512_bf16_supported() else "none"
    return "none"


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls beat fp32 here: CUDA with bf16, or a CPU with AVX512-BF16 or AMX tiles."""
    return bf16_kind(device) != "none"


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting ("auto", "fp32" or "bf16"); None means plain fp32."""
    if setting == "bf16" or (setting == "auto" and fast_bf16(device)):
        return torch.bfloat16
    return None


def autocast_to(amp: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    """An autocast context to `amp` (a disabled one for None: plain fp32)."""
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)


def autocast(setting: str, device: torch.device) -> contextlib.AbstractContextManager:
    """An autocast context for the setting (a disabled one for fp32)."""
    return autocast_to(autocast_dtype(setting, device), device)


def _castable(module: nn.Module) -> bool:
    """A Linear whose weight is a plain, frozen fp32 CPU tensor (not sharded, not under an accelerate hook)."""
    if not isinstance(module, nn.Linear) or hasattr(module, "_hf_hook"):
        return False
    w = module.weight
    return (not w.requires_grad and w.dtype == torch.float32 and w.device.type == "cpu" and not is_sharded(w))


@contextlib.contextmanager
def frozen_weights_cast(model: nn.Module, dtype: torch.dtype) -> Iterator[int]:
    """For the block, every castable Linear's weight is swapped for a `dtype` copy (yields how many); the
    original Parameters are put back after, so tied weights and the adapter are as before."""
    swapped: list[tuple[nn.Linear, nn.Parameter]] = []
    try:
        for module in [m for m in model.modules() if _castable(m)]:
            original = module.weight
            module.weight = nn.Parameter(original.detach().to(dtype), requires_grad=False)
            swapped.append((module, original))
        yield len(swapped)
    finally:
        for module, original in swapped:
            module.weight = original


@contextlib.contextmanager
def scoring_precision(setting: str, model: nn.Module, device: torch.device) -> Iterator[None]:
    """Autocast for a scoring or generation phase (`al.precision`), with the frozen weights cast once per
    phase on a CPU in bf16 (`frozen_weights_cast`) instead of at every decoding step."""
    amp = autocast_dtype(setting, device)
    with contextlib.ExitStack() as stack:
        stack.enter_context(autocast_to(amp, device))
        if amp is not None and device.type == "cpu":
            stack.enter_context(frozen_weights_cast(model, amp))
        yield
