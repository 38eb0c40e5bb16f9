"""The LoRA-wrapped model loaded for the launch's engine: whole on each process (one process, DDP), FSDP-sharded
or ZeRO-3-partitioned, once; every later phase runs through the model returned here."""

from __future__ import annotations

from star.config import LoraSettings, ModelConfig
from star.engine.modeling import LoadedModel, load_model
from star.errors import ConfigError
from star.parallel.distributed import Dist
from star.parallel.fsdp import shard_from_main, shard_model
from star.parallel.zero3 import partition_model


def check_placement(config: ModelConfig, dist: Dist) -> None:
    """Refuse, before anything loads, a model setting the launch's engine cannot run."""
    if dist.sharded and config.load_in_4bit:
        raise ConfigError(f"model.load_in_4bit=true cannot be combined with a {dist.engine} launch",
                          hint=f"use a DDP config with the 4-bit base (each GPU holds it whole), "
                               f"or {dist.engine} without 4-bit")


def load_for_engine(config: ModelConfig, lora: LoraSettings, dist: Dist, show_progress: bool = True) -> LoadedModel:
    """The LoRA-wrapped model on this process: whole, or with FSDP / ZeRO-3 sharded once across the processes."""
    check_placement(config, dist)
    show_progress = show_progress and dist.is_main
    if not dist.sharded:
        return load_model(config, lora, show_progress=show_progress)
    if dist.deepspeed is not None:  # DeepSpeed moves each parameter to the device as it partitions it
        model = load_model(config, lora, place=False, show_progress=show_progress)
        partition_model(model.model, dist.deepspeed, model.device, dist.world)
        return model
    from_main = dist.fsdp.weights_from_main
    # Host memory first: sharding moves each layer to the device, so the base never sits whole on one GPU.
    model = load_model(config, lora, place=False, weights=dist.is_main or not from_main, show_progress=show_progress)
    if from_main:
        shard_from_main(model.model, dist.fsdp, model.device, dist.is_main)
    else:
        shard_model(model.model, dist.fsdp, model.device)
    return model


def engine_label(dist: Dist) -> str:
    """How a multi-process run shares the model, for log.txt: DDP, or FSDP and who read the checkpoint."""
    if dist.fsdp is not None and dist.fsdp.weights_from_main:
        return "FSDP, weights read by the main process"
    return dist.engine
