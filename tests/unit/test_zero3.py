"""DeepSpeed ZeRO-3: accelerate's settings, and the partitioned model's adapter and LM-head paths.

The two-process tests partition the tiny model over 2 gloo processes, as a DeepSpeed launch
does (`tests/integration/test_distributed.py` runs whole runs that way).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from star.config import LoraSettings, ModelConfig
from star.errors import ConfigError
from star.parallel import zero3
from star.parallel.distributed import exit_process, free_port
from star.parallel.zero3 import DeepSpeedSettings, deepspeed_settings

# On a CPU, DeepSpeed compiles its communication op on first use.
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None and shutil.which("c++") is not None
needs_deepspeed = pytest.mark.skipif(not HAS_DEEPSPEED, reason="needs deepspeed and a C++ compiler (pip install deepspeed)")
DS_ENV = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}


@pytest.fixture
def deepspeed_installed(monkeypatch):
    monkeypatch.setattr(zero3.importlib.util, "find_spec", lambda name, *a: object())


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    (DS_ENV, DeepSpeedSettings()),
    ({**DS_ENV, "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "cpu"}, DeepSpeedSettings(offload_params=True)),
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, DeepSpeedSettings()),  # no stage given: ZeRO-3
])
def test_deepspeed_settings_are_read_from_accelerate_launch_environment(env, expected, deepspeed_installed):
    assert deepspeed_settings(env) == expected


@pytest.mark.parametrize("env, named, fix", [
    ({**DS_ENV, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, "zero_stage 2", "ddp.yaml"),
    ({**DS_ENV, "ACCELERATE_DEEPSPEED_CONFIG_FILE": "ds.json"}, "deepspeed_config_file", "deepspeed_zero3.yaml"),
    ({**DS_ENV, "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "nvme"}, "offload_param_device nvme", "none or cpu"),
])
def test_deepspeed_settings_star_cannot_honour_are_refused_with_the_fix(env, named, fix, deepspeed_installed):
    with pytest.raises(ConfigError) as err:
        deepspeed_settings(env)
    assert named in str(err.value) and fix in str(err.value)


def test_the_tests_can_have_every_parameter_partitioned(monkeypatch):
    assert "stage3_param_persistence_threshold" not in deepspeed_config_zero(monkeypatch, None)
    assert deepspeed_config_zero(monkeypatch, "0")["stage3_param_persistence_threshold"] == 0


def deepspeed_config_zero(monkeypatch, threshold: str | None) -> dict:
    if threshold is None:
        monkeypatch.delenv(zero3.PERSISTENCE_ENV, raising=False)
    else:
        monkeypatch.setenv(zero3.PERSISTENCE_ENV, threshold)
    return zero3.ds_config(DeepSpeedSettings(), torch.device("cpu"), 2)["zero_optimization"]


@pytest.mark.parametrize("key, value, said", [
    ("ACCELERATE_DEEPSPEED_ZERO3_INIT", "true", "zero3_init_flag: not used"),
    ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "cpu", "offload_optimizer_device: not used"),
])
def test_settings_star_does_not_use_are_named_in_a_warning(key, value, said, deepspeed_installed, caplog):
    assert deepspeed_settings({**DS_ENV, key: value}) == DeepSpeedSettings()
    assert said in caplog.text


def test_a_deepspeed_launch_without_deepspeed_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(zero3.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match="not installed") as err:
        deepspeed_settings(DS_ENV)
    assert "pip install" in str(err.value)


def test_inference_blocks_use_no_grad_only_for_a_partitioned_model():
    """Parameters ZeRO-3 gathers in inference mode would become inference tensors that training cannot use."""
    model = torch.nn.Linear(2, 2)
    with zero3.inference(model):
        assert torch.is_inference_mode_enabled()
    model.weight.ds_id = 0  # as ZeRO-3 marks the parameters it partitions
    with zero3.inference(model):
        assert not torch.is_inference_mode_enabled() and not torch.is_grad_enabled()


def _spawn(fn, *args) -> None:
    """Run fn(rank, *args) in 2 processes; a hang (mismatched collectives) fails instead of blocking."""
    context = mp.start_processes(fn, args=args, nprocs=2, join=False, start_method="spawn")
    for _ in range(60):
        if context.join(timeout=5):
            return
    for process in context.processes:
        process.kill()
    pytest.fail("the two processes did not finish within 5 minutes: mismatched collectives?")


def _partitioned(rank: int, folder: str, port: int):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))
    import torch.distributed as tdist

    from star.engine.modeling import load_model

    os.environ[zero3.PERSISTENCE_ENV] = "0"  # partition every parameter, even the tiny model's
    tdist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    loaded = load_model(ModelConfig(name=folder, threads=1), LoraSettings(r=2, alpha=4, dropout=0.1), place=False)
    zero3.partition_model(loaded.model, DeepSpeedSettings(), torch.device("cpu"), 2)
    return loaded


def _stats_worker(rank: int, folder: str, port: int, out: str) -> None:
    from star.engine import forward
    from star.engine.batching import collate_pairs

    loaded = _partitioned(rank, folder, port)
    forward.LM_HEAD_CHUNK = 4  # several head chunks per batch, a different number on each process
    rows = 3 if rank == 0 else 1
    prompts, responses = [[5, 6, 7, 8]] * rows, [[9, 10, 11, 12, 13, 14, 15][: 7 - r] for r in range(rows)]
    batch = collate_pairs(prompts, responses, pad_id=0)
    with torch.no_grad():
        logp, ent = forward.response_stats(loaded.model, batch)
    torch.save({"logp": logp, "ent": ent, "batch": batch}, Path(out) / f"stats{rank}.pt")
    exit_process(0)  # leaves the group and skips interpreter teardown, where gloo can abort (docs/scaling.md)


@needs_deepspeed
def test_scoring_applies_the_partitioned_head_in_chunks_whose_count_differs_between_processes(tiny_model_dir, tmp_path):
    from star.engine import forward
    from star.engine.modeling import load_model

    _spawn(_stats_worker, str(tiny_model_dir), free_port(), str(tmp_path))
    torch.manual_seed(0)
    reference = load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4, dropout=0.1))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"stats{rank}.pt", weights_only=False)
        with torch.no_grad():
            logp, ent = forward.response_stats(reference.model, got["batch"])
        torch.testing.assert_close(got["logp"], logp, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["ent"], ent, rtol=1e-5, atol=1e-6)


def _adapter_worker(rank: int, folder: str, port: int, out: str) -> None:
    from star.engine.adapter import load_adapter_weights, reset_adapter, save_adapter
    from star.parallel.params import adapter_state, is_sharded

    loaded = _partitioned(rank, folder, port)
    assert all(is_sharded(p) for p in loaded.model.parameters())
    reset_adapter(loaded.model, seed=5)
    fresh = adapter_state(loaded.model)
    reset_adapter(loaded.model, seed=6)
    if rank == 0:
        save_adapter(loaded.model, Path(out) / "adapter", fresh)
    torch.distributed.barrier()
    load_adapter_weights(loaded.model, Path(out) / "adapter")
    torch.save({"fresh": fresh, "loaded": adapter_state(loaded.model)}, Path(out) / f"adapter{rank}.pt")
    exit_process(0)  # leaves the group and skips interpreter teardown, where gloo can abort (docs/scaling.md)


@needs_deepspeed
def test_partitioned_adapters_get_peft_init_and_saved_weights(tiny_model_dir, tmp_path):
    """A fresh adapter equals peft's one-process draw; saved whole, it loads back into the partitions."""
    from star.engine.adapter import reset_adapter
    from star.engine.modeling import load_model
    from star.parallel.params import adapter_state

    _spawn(_adapter_worker, str(tiny_model_dir), free_port(), str(tmp_path))
    reference = load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4, dropout=0.1))
    reset_adapter(reference.model, seed=5)
    expected = adapter_state(reference.model)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"adapter{rank}.pt")
        for part in ("fresh", "loaded"):
            assert got[part].keys() == expected.keys()
            for key, value in expected.items():
                torch.testing.assert_close(got[part][key], value, rtol=0, atol=0, msg=f"rank {rank} {part}: {key}")
