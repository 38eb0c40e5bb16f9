"""FSDP (parameter sharding) for multi-process runs launched with an accelerate FSDP config.

`accelerate launch --config_file examples/accelerate/fsdp.yaml -m star run ...` sets
`ACCELERATE_USE_FSDP` and the `FSDP_*` fields in every process's environment. star reads
them here and shards the LoRA-wrapped model once, with torch's FSDP2 (`fully_shard`): each
decoder layer, then the causal LM around them. The model stays the same Python object, so
training, MC-dropout scoring, generation and evaluation all run through it; its parameters
become DTensors that each layer all-gathers for its forward. That is why every process must
run the same number of forwards (`Dist.lockstep_share`, `generate(synced_gpus=True)`), and
why adapter weights are read and written through the helpers of parallel/params.py.
"""

from __future__ import annotations

import logging
import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from star.errors import ConfigError
from star.parallel.params import is_sharded

T = TypeVar("T")

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes")
#: accelerate's FSDP1 sharding strategies (by name or number) and FSDP2's reshard_after_forward.
_STRATEGIES = {"FULL_SHARD": True, "1": True, "SHARD_GRAD_OP": False, "2": False}


@dataclass(frozen=True)
class FsdpSettings:
    """The parts of an accelerate FSDP config that star honours."""

    reshard_after_forward: bool = True  # FULL_SHARD (ZeRO-3); False is SHARD_GRAD_OP (ZeRO-2)
    offload_params: bool = False  # parameters kept in CPU memory between uses (CUDA only)
    layer_classes: tuple[str, ...] = ()  # the modules sharded one by one; () = the model's decoder layers
    main_loads: bool = False  # fsdp_cpu_ram_efficient_loading: only the main process reads the checkpoint

    @property
    def weights_from_main(self) -> bool:
        """Whether processes other than the main one build an empty model and receive their shards.

        Not with parameter offload: its shards live in pinned host memory, a path not tested here.
        """
        return self.main_loads and not self.offload_params


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").lower() in _TRUE


def fsdp_settings(env: Mapping[str, str] | None = None) -> FsdpSettings | None:
    """The FSDP settings accelerate launch put in the environment, or None when FSDP is off.

    Settings star cannot honour are refused here, before any model loads, with the fix.
    """
    env = os.environ if env is None else env
    if not _flag(env, "ACCELERATE_USE_FSDP"):
        return None
    if env.get("FSDP_VERSION", "1") == "2":
        reshard = env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in _TRUE
    else:
        strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
        if strategy not in _STRATEGIES:
            raise ConfigError(f"fsdp_sharding_strategy {strategy} (accelerate config) is not supported by star",
                              hint="use FULL_SHARD or SHARD_GRAD_OP; for no sharding use a DDP config (examples/accelerate/ddp.yaml)")
        reshard = _STRATEGIES[strategy]
    if _flag(env, "FSDP_ACTIVATION_CHECKPOINTING"):
        raise ConfigError("fsdp_activation_checkpointing (accelerate config) is not used by star",
                          hint="set it to false and pass train.gradient_checkpointing=true instead (the same recomputation)")
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    if policy not in ("TRANSFORMER_BASED_WRAP", ""):
        log.warning("fsdp_auto_wrap_policy %s: star shards each decoder layer (TRANSFORMER_BASED_WRAP) instead", policy)
    classes = tuple(c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    offload, main_loads = _flag(env, "FSDP_OFFLOAD_PARAMS"), _flag(env, "FSDP_CPU_RAM_EFFICIENT_LOADING")
    if offload and main_loads:
        log.warning("fsdp_cpu_ram_efficient_loading with fsdp_offload_params: every process reads the checkpoint")
    return FsdpSettings(reshard, offload, classes, main_loads)


ROOT_METHOD = "star_with_root_params"


def _call(self: nn.Module, fn: Callable[[], T]) -> T:
    return fn()


def shard_model(model: nn.Module, settings: FsdpSettings, device: torch.device) -> None:
    """Shard a peft model in place with FSDP2 over all processes on `device`: every decoder layer, then the root.

    The root is the transformers model inside peft, not the PeftModel, because `generate`
    calls the inner model directly; its forward must still all-gather the embedding and head.
    The model may still be in host memory: each module's weights move to `device` as it is
    sharded, so the whole base is never on one GPU.
    """
    import torch.distributed as tdist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    causal_lm = model.get_base_model()
    names = settings.layer_classes or tuple(getattr(causal_lm, "_no_split_modules", None) or ())
    layers = [m for m in causal_lm.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"FSDP: no module of {type(causal_lm).__name__} is one of {list(names)} to shard",
                          hint="set fsdp_transformer_layer_cls_to_wrap in the accelerate config to the decoder layer's class name")
    mesh = init_device_mesh(device.type, (tdist.get_world_size(),))
    kwargs: dict = {"reshard_after_forward": settings.reshard_after_forward, "mesh": mesh}
    if settings.offload_params and device.type == "cuda":
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for layer in layers:
        fully_shard(layer, **kwargs)
    fully_shard(causal_lm, **kwargs)
    # star's own forwards (engine/forward.py) call the decoder and the LM head separately, not the
    # root's forward: this method runs them with the root's parameters (embedding, norm, head) gathered.
    setattr(causal_lm, ROOT_METHOD, types.MethodType(_call, causal_lm))
    register_fsdp_forward_method(causal_lm, ROOT_METHOD)
    log.info("FSDP: sharded %d %s modules and the root (reshard_after_forward=%s)", len(layers),
             type(layers[0]).__name__, settings.reshard_after_forward)


def _layout(model: nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    """Name, shape and dtype of every parameter and buffer, in the order the weights are sent."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [(name, tuple(t.shape), str(t.dtype)) for name, t in tensors]


def _check_same_layout(model: nn.Module) -> None:
    """Every process must hold the same modules before weights are sent by position (collective)."""
    import torch.distributed as tdist

    mine = _layout(model)
    every: list = [None] * tdist.get_world_size()
    tdist.all_gather_object(every, mine)
    main = every[0]
    for rank, theirs in enumerate(every):
        if theirs == main:
            continue
        if len(theirs) != len(main):
            ours, its = f"{len(main)} tensors", f"{len(theirs)} tensors"
        else:
            ours, its = next((a, b) for a, b in zip(main, theirs) if a != b)
        raise ConfigError(f"FSDP: process {rank} built a different model than the main process: {its} against {ours}",
                          hint="every process must run the same star version, model.name and lora settings")


@torch.no_grad()
def shard_from_main(model: nn.Module, settings: FsdpSettings, device: torch.device, is_main: bool) -> None:
    """Shard a model whose weights only the main process loaded; the others hold a meta skeleton.

    accelerate's `fsdp_cpu_ram_efficient_loading`: one process reads the checkpoint into host
    memory instead of every process (8 copies of a 7B base on an 8-GPU node is 100+ GB). After
    sharding, the others allocate their empty shards, and each parameter is scattered from the
    main process (each process receives only its shard), each buffer broadcast.
    """
    import torch.distributed as tdist
    from torch.distributed.tensor import distribute_tensor

    _check_same_layout(model)
    # Detached views keep the host copies: sharding may move a parameter object's data to the device.
    whole = {name: p.detach() for name, p in model.named_parameters()} if is_main else {}
    shard_model(model, settings, device)
    if not is_main:
        model.to_empty(device=device)
    for name, p in model.named_parameters():
        source = whole.pop(name) if is_main else torch.empty(p.shape, dtype=p.dtype, device=device)
        if is_sharded(p):
            p.copy_(distribute_tensor(source.to(device), p.device_mesh, p.placements, src_data_rank=0))
        else:
            tdist.broadcast(p.data, src=0)
    for buffer in model.buffers():
        tdist.broadcast(buffer, src=0)
    log.info("FSDP: weights read by the main process only and sent to %d others", tdist.get_world_size() - 1)


def with_root_params(model: nn.Module, fn: Callable[[], T]) -> T:
    """`fn()` with the sharded root's parameters gathered (FSDP), or simply `fn()`.

    For computations that use the model's decoder and LM head without calling its forward.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    run = getattr(base, ROOT_METHOD, None)
    return run(fn) if run is not None else fn()
