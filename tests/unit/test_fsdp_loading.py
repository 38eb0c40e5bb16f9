"""FSDP with `fsdp_cpu_ram_efficient_loading`: only the main process reads the checkpoint.

Two gloo processes: the main one loads the tiny model, the other builds a meta skeleton; after
`shard_from_main` both must hold exactly the weights and buffers of an ordinary load, and
compute the same logits.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from star.config import LoraSettings, ModelConfig
from star.engine.modeling import load_model
from star.parallel.distributed import exit_process, free_port
from star.parallel.fsdp import FsdpSettings

LORA = LoraSettings(r=2, alpha=4, dropout=0.1)
IDS = torch.tensor([[5, 9, 40, 77, 12, 3]])  # (1, 6)



def _reference(folder: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)  # peft draws LoRA A from the global generator
    model = load_model(ModelConfig(name=str(folder), threads=1), LORA).model
    with torch.no_grad():
        logits = model(input_ids=IDS).logits
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}, logits


def _worker(rank: int, folder: str, port: int, out: str) -> None:
    import torch.distributed as tdist

    from star.parallel.fsdp import shard_from_main
    from star.parallel.params import full_value

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    loaded = load_model(ModelConfig(name=folder, threads=1), LORA, place=False, weights=rank == 0)
    if rank == 1:
        assert all(p.is_meta for p in loaded.model.parameters())  # nothing was read from disk
    shard_from_main(loaded.model, FsdpSettings(main_loads=True), torch.device("cpu"), is_main=rank == 0)
    weights = {name: full_value(p).detach().clone() for name, p in loaded.model.named_parameters()}
    weights.update({name: b.clone() for name, b in loaded.model.named_buffers()})
    with torch.no_grad():
        logits = loaded.model(input_ids=IDS).logits
    torch.save({"weights": weights, "logits": logits}, Path(out) / f"rank{rank}.pt")
    exit_process(0)  # leaves the group and skips interpreter teardown, where gloo can abort (docs/scaling.md)


def test_only_the_main_process_reads_weights_and_every_process_gets_them(tiny_model_dir, tmp_path):
    mp.spawn(_worker, args=(str(tiny_model_dir), free_port(), str(tmp_path)), nprocs=2, join=True)
    expected, expected_logits = _reference(tiny_model_dir)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(got["weights"]) == set(expected)
        for name, value in got["weights"].items():
            torch.testing.assert_close(value, expected[name].detach(), rtol=0, atol=0, msg=f"rank {rank}: {name}")
        torch.testing.assert_close(got["logits"], expected_logits, rtol=1e-5, atol=1e-6)


def _mismatch_worker(rank: int, folder: str, port: int, out: str) -> None:
    import torch.distributed as tdist

    from star.errors import ConfigError
    from star.parallel.fsdp import shard_from_main

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    lora = LORA if rank == 0 else LoraSettings(r=4, alpha=4, dropout=0.1)  # another rank: another model
    loaded = load_model(ModelConfig(name=folder, threads=1), lora, place=False, weights=rank == 0)
    try:
        shard_from_main(loaded.model, FsdpSettings(main_loads=True), torch.device("cpu"), is_main=rank == 0)
    except ConfigError as e:
        (Path(out) / f"rank{rank}.txt").write_text(str(e))
    exit_process(0)  # leaves the group and skips interpreter teardown, where gloo can abort (docs/scaling.md)


def test_processes_that_built_different_models_are_refused_before_any_weight_moves(tiny_model_dir, tmp_path):
    mp.spawn(_mismatch_worker, args=(str(tiny_model_dir), free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):  # both stop with the same error instead of one hanging in a collective
        message = (tmp_path / f"rank{rank}.txt").read_text()
        assert "process 1 built a different model" in message and "lora_A" in message
