"""Whole values of parameters that may be split across processes (FSDP's DTensors or ZeRO-3's partitions).

Both engines need the same few operations on a possibly-sharded parameter: is it sharded,
its whole value, set it from a whole value, peft's LoRA init drawn whole, the adapter's
state as whole tensors, and the LM head applied chunk by chunk. Each helper dispatches to
the engine that owns the parameter, so the engine code above never asks which one it is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from star.errors import ConfigError
from star.parallel import zero3


def _is_dtensor(param: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(param, DTensor)


@contextlib.contextmanager
def head_function(head: nn.Module) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """The LM head, to be applied to several chunks in a row without autograd.

    Under ZeRO-3 its weights are gathered once for all chunks (zero3.head_function); FSDP's
    root method has already gathered them (`fsdp.with_root_params`).
    """
    if any(zero3.is_partitioned(p) for p in head.parameters()):
        with zero3.head_function(head) as apply:
            yield apply
    else:
        yield head


def is_sharded(param: torch.Tensor) -> bool:
    """True for a parameter split across processes: FSDP's (a DTensor) or DeepSpeed ZeRO-3's."""
    return _is_dtensor(param) or zero3.is_partitioned(param)


def full_value(param: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a parameter; for a sharded one, a collective every process must call."""
    if zero3.is_partitioned(param):
        return zero3.full_value(param)
    return param.full_tensor() if _is_dtensor(param) else param


@torch.no_grad()
def copy_full_(param: torch.Tensor, value: torch.Tensor) -> None:
    """Set a parameter from its whole value; a sharded one keeps this process's shard of it.

    Every process holds the same `value` (same seed, or the same file), so no data moves.
    """
    if zero3.is_partitioned(param):
        zero3.copy_full_(param, value)
    elif _is_dtensor(param):
        from torch.distributed.tensor import distribute_tensor

        local = value.to(device=param.to_local().device, dtype=param.dtype)
        param.copy_(distribute_tensor(local, param.device_mesh, param.placements, src_data_rank=None))
    else:
        param.copy_(value)


def fresh_lora_(a: torch.Tensor, b: torch.Tensor) -> None:
    """peft's LoRA init for sharded A and B: A Kaiming-uniform (a=sqrt 5) drawn whole, B zero.

    Drawn on a whole tensor of A's shape, so the values equal what peft draws in one process
    from the same generator state.
    """
    fresh = torch.empty(zero3.whole_shape(a), dtype=a.dtype, device=a.to_local().device if _is_dtensor(a) else a.device)
    nn.init.kaiming_uniform_(fresh, a=math.sqrt(5))
    copy_full_(a, fresh)
    copy_full_(b, torch.zeros(zero3.whole_shape(b), dtype=b.dtype))


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's parameters as whole tensors, keyed as in `model.state_dict()` (collective)."""
    return {name: full_value(p).detach() for name, p in model.named_parameters() if "lora_" in name}


def load_adapter_state(model: nn.Module, saved: Mapping[str, torch.Tensor], adapter: str = "default") -> None:
    """Load a saved peft adapter (keys without the adapter name) into a sharded model."""
    missing = []
    for name, p in model.named_parameters():
        if "lora_" not in name:
            continue
        key = name.replace(f".{adapter}.", ".")
        if key not in saved:
            missing.append(key)
            continue
        copy_full_(p, saved[key])
    if missing:
        raise ConfigError(f"the saved adapter lacks {len(missing)} LoRA weights of this model, e.g. {missing[0]}",
                          hint="the run's adapter was saved with other lora settings; resume with the run's own config")
