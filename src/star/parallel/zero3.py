"""DeepSpeed ZeRO-3 for multi-process runs launched with an accelerate DeepSpeed config.

`accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml -m star run ...`
sets `ACCELERATE_USE_DEEPSPEED` and the `ACCELERATE_DEEPSPEED_*` fields in every process's
environment. star reads them here and partitions the LoRA-wrapped model's parameters with
DeepSpeed once: an engine without optimizer installs ZeRO-3's hooks, which gather each module's
parameters for its forward (and backward). Scoring, generation and evaluation run through
those hooks; each round's training gets an engine of its own, with that round's fresh AdamW,
and is destroyed after it. As with FSDP, every process must run the same forwards in the same
order (`Dist.lockstep_share`, `generate(synced_gpus=True)`), and adapter weights are read and
written through parallel/fsdp.py's helpers, which dispatch here for partitioned parameters.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from star.errors import ConfigError

log = logging.getLogger(__name__)

_TRUE = ("1", "true", "yes")
PERSISTENCE_ENV = "STAR_ZERO3_PERSISTENCE_THRESHOLD"  # DeepSpeed's default (1e5 elements) when unset
ENGINE_ATTR = "_star_zero3_engine"  # the model keeps its hook-owning engine alive on this attribute


@dataclass(frozen=True)
class DeepSpeedSettings:
    """The parts of an accelerate DeepSpeed config that star honours."""

    offload_params: bool = False  # offload_param_device: cpu (CUDA only)


def deepspeed_settings(env: Mapping[str, str] | None = None) -> DeepSpeedSettings | None:
    """The DeepSpeed settings accelerate launch put in the environment, or None without DeepSpeed.

    Only ZeRO stage 3 is run; settings star cannot honour are refused here, before any model
    loads, with the fix.
    """
    env = os.environ if env is None else env
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() not in _TRUE:
        return None
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("this run was launched with DeepSpeed, which is not installed",
                          hint='pip install deepspeed (or the package\'s "deepspeed" extra), or launch with examples/accelerate/fsdp.yaml')
    if env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        raise ConfigError("deepspeed_config_file (accelerate config) is not read by star",
                          hint="set zero_stage: 3 and offload_param_device in the accelerate config itself "
                               "(examples/accelerate/deepspeed_zero3.yaml); star builds the DeepSpeed config")
    stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    if stage != "3":
        raise ConfigError(f"zero_stage {stage} (accelerate config): star runs DeepSpeed with ZeRO stage 3 only",
                          hint="stages 0-2 shard no parameters, and LoRA's optimizer state is a few MB: use a DDP config "
                               "(examples/accelerate/ddp.yaml), or zero_stage: 3 to shard the base")
    offload = env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none").lower()
    if offload not in ("none", "cpu"):
        raise ConfigError(f"offload_param_device {offload} (accelerate config) is not supported by star",
                          hint="use none or cpu")
    if env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none").lower() not in ("none", ""):
        log.warning("offload_optimizer_device: not used; the optimizer state is LoRA's, a few MB")
    if env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "").lower() in _TRUE:
        log.warning("zero3_init_flag: not used; every process reads the checkpoint, then star partitions it")
    return DeepSpeedSettings(offload_params=offload == "cpu")


def ds_config(settings: DeepSpeedSettings, device: torch.device, world: int) -> dict:
    """The DeepSpeed config star's engines use: ZeRO-3, one micro-batch per step (star batches itself)."""
    # memory_efficient_linear would replace torch.nn.functional.linear process-wide with DeepSpeed's
    # own; ZeRO-3's module hooks already gather the weights that torch's linear needs in the backward.
    zero: dict = {"stage": 3, "memory_efficient_linear": False}
    threshold = os.environ.get(PERSISTENCE_ENV)
    if threshold:  # parameters below it are never partitioned; the tests set 0 to partition a tiny model's every one
        zero["stage3_param_persistence_threshold"] = zero["stage3_model_persistence_threshold"] = int(threshold)
    if settings.offload_params and device.type == "cuda":
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "train_batch_size": world,
        "zero_optimization": zero, "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


def inference(model: nn.Module) -> contextlib.AbstractContextManager:
    """A gradient-free block of forwards through `model`: `torch.inference_mode`, or `torch.no_grad`
    when ZeRO-3 partitions the model's parameters.

    ZeRO-3 gathers parameters inside the forward; gathered in inference mode, they would become
    inference tensors that training can no longer use (`requires_grad` is refused on them).
    """
    return torch.no_grad() if is_partitioned_model(model) else torch.inference_mode()


def _join(device: torch.device) -> None:
    """deepspeed.comm on top of the process group accelerate already started."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo" if device.type == "cpu" else "nccl")


def _partition_in_place(model: nn.Module, config: dict, device: torch.device) -> None:
    """Partition every parameter, one at a time onto `device` (buffers are moved whole).

    Left to `deepspeed.initialize`, the whole model would first move to the device.
    """
    import deepspeed

    offload = config["zero_optimization"].get("offload_param")
    deepspeed.zero.Init(module=model, config_dict_or_path=config, remote_device="cpu" if offload else None,
                        pin_memory=bool(offload))
    for module in model.modules():  # buffers (e.g. rotary frequencies) are not partitioned: moved whole
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = buffer.to(device)


def partition_model(model: nn.Module, settings: DeepSpeedSettings, device: torch.device, world: int) -> None:
    """Partition a peft model's parameters in place with ZeRO-3 across all processes.

    The model may be in host memory: DeepSpeed moves each parameter to `device` as it
    partitions it, so the whole base never sits on one GPU.
    """
    import deepspeed

    _join(device)
    config = ds_config(settings, device, world)
    if not is_partitioned_model(model):
        _partition_in_place(model, config, device)
    engine, *_ = deepspeed.initialize(model=model, config=config)  # installs the hooks on the partitioned model
    object.__setattr__(model, ENGINE_ATTR, engine)  # not a submodule: the engine wraps the model
    log.debug("DeepSpeed ZeRO-3: %d parameters partitioned across %d processes", sum(1 for _ in model.parameters()), world)


@contextlib.contextmanager
def training_engine(model: nn.Module, module: nn.Module, optimizer: torch.optim.Optimizer, settings: DeepSpeedSettings,
                    device: torch.device, world: int) -> Iterator:
    """An engine for one round's training of the partitioned `model`: `module` (holding it) and a fresh optimizer.

    One engine's hooks at a time: two engines' hooks on the same modules, each prefetching
    parameters for itself, find each other's gathers in flight. So the model's own engine is
    destroyed for the block and a new one takes its place after it. The scheduler stays the
    caller's: it sets the learning rate in `optimizer`'s groups, which ZeRO-3's optimizer steps.
    """
    import deepspeed

    getattr(model, ENGINE_ATTR).destroy()
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config(settings, device, world))
    try:
        yield engine
    finally:
        engine.destroy()
        partition_model(model, settings, device, world)  # its parameters stay partitioned: only the hooks are new


def is_partitioned(param: torch.Tensor) -> bool:
    """True for a ZeRO-3 partitioned parameter."""
    return hasattr(param, "ds_id")


def is_partitioned_model(model: nn.Module) -> bool:
    """True once ZeRO-3 has partitioned `model`'s parameters (every one of them, as `partition_model` does)."""
    return any(is_partitioned(p) for p in model.parameters())


def whole_shape(param: torch.Tensor) -> torch.Size:
    """The shape of the whole parameter (a partitioned one's own `shape` is empty)."""
    return param.ds_shape if is_partitioned(param) else param.shape


@contextlib.contextmanager
def gathered(params: Sequence[torch.Tensor], modify: bool = False) -> Iterator[None]:
    """Whole parameters inside the block (collective); with `modify`, the main process's
    changes are kept, and every process gets them, when the block ends."""
    from deepspeed.runtime.zero import GatheredParameters

    with GatheredParameters(list(params), modifier_rank=0 if modify else None):
        yield


def full_value(param: torch.Tensor) -> torch.Tensor:
    """A copy of the whole value of a partitioned parameter (collective)."""
    with gathered([param]):
        return param.data.detach().clone()


@torch.no_grad()
def copy_full_(param: torch.Tensor, value: torch.Tensor) -> None:
    """Set a partitioned parameter from its whole value (collective; the main process's value wins)."""
    with gathered([param], modify=True):
        param.data.copy_(value.to(device=param.device, dtype=param.dtype))


@contextlib.contextmanager
def head_function(head: nn.Module) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """The LM head as a function for several calls without autograd (scoring's chunks).

    ZeRO-3's hooks gather a module's weights for each call; chunks of different counts on
    different processes would then mismatch their collectives. Gathered once, and applied
    without the module's hooks, every process does one gather per batch.
    """
    with gathered(list(head.parameters())):
        yield lambda x: nn.functional.linear(x, head.weight, head.bias)
