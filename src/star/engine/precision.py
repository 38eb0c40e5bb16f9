"""Which dtype the matmuls of a phase run in: bf16 autocast where the hardware makes it pay.

Weights stay in the model's dtype (fp32 on a CPU), LoRA weights and optimizer state in fp32,
and statistics (log-softmax, entropy, loss) are computed in fp32; only the matmuls run in bf16.
"""

from __future__ import annotations

import contextlib

import torch


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls beat fp32 here: CUDA with bf16, or a CPU with AVX512-BF16 or AMX tiles."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


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
