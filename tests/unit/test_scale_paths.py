"""Options for scaling: 4-bit base errors, gradient checkpointing, batch-invariant MC dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from star.cli import main
from star.config import LoraSettings, ModelConfig, TrainConfig
from star.engine.adapter import reset_adapter
from star.engine.batching import encode_prompts, encode_responses
from star.engine.modeling import load_model
from star.engine.scoring import score_pairs
from star.engine.training import train_adapter
from star.errors import ConfigError
from star.parallel import memory
from star.parallel.distributed import Dist
from star.parallel.fsdp import FsdpSettings, fsdp_settings
from star.parallel.params import is_sharded

PROMPTS = ["Ava has 3 apples. How many?", "Ben has 12 coins and buys 4 more. How many?", "x?", "A longer question " * 4]
ANSWERS = ["3", "12 + 4 = 16. The final answer is 16", "1", "The final answer is 7"]


@pytest.fixture
def loaded(tiny_model_dir):
    m = load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4, dropout=0.3))
    torch.manual_seed(0)
    for name, p in m.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a non-trivial adapter, so dropout matters
    return m


def _pairs(m):
    tok = m.tokenizer
    return encode_prompts(tok, PROMPTS, 96), encode_responses(tok, ANSWERS, 48)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_4bit_without_cuda_is_one_clear_error(tmp_path, capsys):
    code = main(["run", "model.load_in_4bit=true", f"output_dir={tmp_path / 'r'}"])
    assert code == 2
    assert "model.load_in_4bit=true needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_mc_scores_do_not_depend_on_batch_size(loaded):
    prompts, responses = _pairs(loaded)
    pad = loaded.tokenizer.pad_token_id
    one = score_pairs(loaded.model, prompts, responses, pad, batch_size=3, passes=3, seed=5, show_progress=False)
    many = score_pairs(loaded.model, prompts, responses, pad, batch_size=12, passes=3, seed=5, show_progress=False)
    np.testing.assert_allclose(one.pe, many.pe, rtol=1e-5)
    np.testing.assert_allclose(one.me, many.me, rtol=1e-5)
    assert not np.allclose(one.pe[:, 0], one.pe[:, 1])  # the passes really are stochastic


def test_gradient_checkpointing_trains_the_same_adapter(loaded):
    prompts, responses = _pairs(loaded)
    pad = loaded.tokenizer.pad_token_id
    results = []
    for checkpointing in (False, True):
        reset_adapter(loaded.model, 1)
        cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-2, gradient_checkpointing=checkpointing)
        stats = train_adapter(loaded.model, prompts, responses, pad, cfg, seed=3, show_progress=False)
        b = [p.detach().clone() for n, p in loaded.model.named_parameters() if "lora_B" in n]
        results.append((stats.mean_loss, b))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for x, y in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("env, named, fix", [
    ({"ACCELERATE_USE_MEGATRON_LM": "true"}, "Megatron-LM", "fsdp.yaml"),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, "zero_stage 2", "ddp.yaml"),
])
def test_unsupported_engine_launch_is_refused_before_the_model_loads(env, named, fix, tiny_run_config, tmp_path,
                                                                    monkeypatch, capsys):
    import yaml

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # as if deepspeed were installed
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(tiny_run_config))
    assert main(["run", "--quiet", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert named in err and fix in err
    assert not (tmp_path / "run").exists()  # nothing was started


FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "true",
            "FSDP_OFFLOAD_PARAMS": "false", "FSDP_ACTIVATION_CHECKPOINTING": "false"}


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    (FSDP_ENV, FsdpSettings(True, False, ())),
    ({**FSDP_ENV, "FSDP_RESHARD_AFTER_FORWARD": "false", "FSDP_OFFLOAD_PARAMS": "true"}, FsdpSettings(False, True, ())),
    ({**FSDP_ENV, "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer, MistralDecoderLayer"},
     FsdpSettings(True, False, ("LlamaDecoderLayer", "MistralDecoderLayer"))),
    ({**FSDP_ENV, "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}, FsdpSettings(False, False, ())),
    ({**FSDP_ENV, "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "1"}, FsdpSettings(True, False, ())),
    ({**FSDP_ENV, "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}, FsdpSettings(True, False, (), main_loads=True)),
])
def test_fsdp_settings_are_read_from_accelerate_launch_environment(env, expected):
    assert fsdp_settings(env) == expected


@pytest.mark.parametrize("env, named, fix", [
    ({**FSDP_ENV, "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "NO_SHARD"}, "NO_SHARD", "ddp.yaml"),
    ({**FSDP_ENV, "FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "HYBRID_SHARD", "FULL_SHARD"),
    ({**FSDP_ENV, "FSDP_ACTIVATION_CHECKPOINTING": "true"}, "fsdp_activation_checkpointing", "train.gradient_checkpointing=true"),
])
def test_fsdp_settings_star_cannot_honour_are_refused_with_the_fix(env, named, fix):
    with pytest.raises(ConfigError) as err:
        fsdp_settings(env)
    assert named in str(err.value) and fix in str(err.value)


def test_only_the_main_process_reads_weights_unless_parameters_are_offloaded():
    assert FsdpSettings(main_loads=True).weights_from_main
    assert not FsdpSettings(main_loads=False).weights_from_main
    assert not FsdpSettings(offload_params=True, main_loads=True).weights_from_main  # pinned host shards: every process loads


def test_lockstep_share_tops_up_short_shares_only_when_parameters_are_sharded():
    items = ["a", "b", "c", "d", "e"]
    assert Dist(0, 2).lockstep_share(items) == (["a", "c", "e"], 3)
    assert Dist(1, 2).lockstep_share(items) == (["b", "d"], 2)  # DDP: each process runs only its own
    assert Dist(1, 2, fsdp=FsdpSettings()).lockstep_share(items) == (["b", "d", "a"], 2)  # one stand-in, result dropped
    assert Dist(3, 4, fsdp=FsdpSettings()).lockstep_share(["a"]) == (["a"], 0)
    assert Dist(1, 2, fsdp=FsdpSettings()).lockstep_share([]) == ([], 0)


def test_map_batches_runs_every_batch_and_returns_each_items_result_in_index_order():
    batches = [[3, 0], [4], [1, 2]]  # length-bucketed: not in index order
    ran: list[list[int]] = []
    results = Dist().map_batches(batches, lambda batch: ran.append(batch) or [f"r{i}" for i in batch])
    assert ran == batches and results == ["r0", "r1", "r2", "r3", "r4"]


def _fake_heap(monkeypatch, sizes_mb: list[int], events: list[str]) -> None:
    """Resident-set readings in MB, one per call, and a malloc_trim that records its calls."""
    memory.release_free_memory()  # the real one first: glibc's malloc_trim, or nothing without glibc
    readings = iter(sizes_mb)
    monkeypatch.setattr(memory, "resident_bytes", lambda: next(readings) << 20)
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: events.append(f"trim {pad}") or 1)


def test_map_batches_gives_freed_memory_back_only_past_the_slack(monkeypatch):
    """glibc keeps freed heap pages resident: a phase trims once its resident set grew by more than the slack
    (256 MB) since it began or since its last trim, and then measures again (parallel/memory.py)."""
    events: list[str] = []
    # start 500; after batch 0: 700 (+200, kept); batch 1: 800 (+300: trim, then 520); batch 2: 700 (+180, kept)
    _fake_heap(monkeypatch, [500, 700, 800, 520, 700], events)
    Dist().map_batches([[0], [1], [2]], lambda batch: events.append(f"run {batch}") or list(batch))
    assert events == ["run [0]", "run [1]", "trim 0", "run [2]"]


def test_a_phase_whose_heap_stays_within_the_slack_never_trims(monkeypatch):
    events: list[str] = []
    _fake_heap(monkeypatch, [500, 510, 505, 620], events)
    Dist().map_batches([[0], [1], [2]], lambda batch: events.append(f"run {batch}") or list(batch))
    assert events == ["run [0]", "run [1]", "run [2]"]


def test_without_a_resident_set_reading_every_batch_trims(monkeypatch):
    """No /proc (not Linux): the bound without the measure, a trim after every batch as before."""
    events: list[str] = []
    memory.release_free_memory()
    monkeypatch.setattr(memory, "resident_bytes", lambda: None)
    monkeypatch.setattr(memory, "_malloc_trim", lambda: lambda pad: events.append(f"trim {pad}") or 1)
    guard = memory.TrimGuard()
    for _ in range(2):
        guard.after_batch()
    assert events == ["trim 0", "trim 0"] and guard.trims == 2


def test_resident_bytes_reads_this_process(monkeypatch):
    rss = memory.resident_bytes()
    if rss is None:
        pytest.skip("no /proc/self/statm here")
    block = b"\x01" * (64 << 20)  # 64 MB, every page written: resident
    assert memory.resident_bytes() >= rss + (60 << 20) and len(block) == 64 << 20


def test_fsdp_with_a_4bit_base_is_refused_before_the_model_loads(tiny_run_config, monkeypatch):
    from star import loop
    from star.engine import placement
    from star.parallel import distributed

    monkeypatch.setattr(distributed, "init", lambda device: Dist(0, 2, fsdp=FsdpSettings()))
    monkeypatch.setattr(placement, "load_model", lambda *a, **k: pytest.fail("the model must not load"))
    monkeypatch.setattr(loop.experiment, "check_model_config", lambda config: [])  # as if on a machine with CUDA
    cfg = {**tiny_run_config, "model": {**tiny_run_config["model"], "load_in_4bit": True}}
    with pytest.raises(ConfigError, match="load_in_4bit.*FSDP"):
        loop.setup(cfg, show_progress=False)


def test_sharded_model_gets_peft_init_and_saved_weights_in_one_process(loaded, tmp_path):
    """FSDP2 on a one-process group: fresh adapters equal peft's draw, and saved weights load back."""
    import os

    import torch.distributed as tdist

    from star.engine.adapter import load_adapter_weights, save_adapter
    from star.parallel.fsdp import shard_model
    from star.parallel.params import adapter_state

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    tdist.init_process_group("gloo", rank=0, world_size=1)
    try:
        reset_adapter(loaded.model, seed=5)
        peft_init = {k: v.clone() for k, v in adapter_state(loaded.model).items()}
        shard_model(loaded.model, FsdpSettings(), torch.device("cpu"))
        assert all(is_sharded(p) for p in loaded.model.parameters())
        with torch.no_grad():
            for name, p in loaded.model.named_parameters():
                if "lora_" in name:
                    p.mul_(0).add_(1.0)  # scribble over the adapter
        reset_adapter(loaded.model, seed=5)
        for key, value in adapter_state(loaded.model).items():
            torch.testing.assert_close(value, peft_init[key], rtol=0, atol=0)
        save_adapter(loaded.model, tmp_path / "adapter", adapter_state(loaded.model))
        reset_adapter(loaded.model, seed=6)
        load_adapter_weights(loaded.model, tmp_path / "adapter")
        for key, value in adapter_state(loaded.model).items():
            torch.testing.assert_close(value, peft_init[key], rtol=0, atol=0)
    finally:
        tdist.destroy_process_group()


def test_precision_setting_picks_the_autocast_dtype(monkeypatch):
    from star.engine.precision import autocast_dtype

    cpu = torch.device("cpu")
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert autocast_dtype("auto", cpu) is None  # no fast bf16 on this CPU: plain fp32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert autocast_dtype("auto", cpu) is torch.bfloat16


def test_bf16_training_runs_matmuls_in_bf16_and_keeps_lora_weights_fp32(loaded):
    prompts, responses = _pairs(loaded)
    pad = loaded.tokenizer.pad_token_id
    seen: set[torch.dtype] = set()
    q_proj = next(m for n, m in loaded.model.named_modules() if n.endswith("q_proj.base_layer"))
    hook = q_proj.register_forward_hook(lambda mod, args, out: seen.add(out.dtype))
    results = {}
    try:
        for precision in ("fp32", "bf16"):
            seen.clear()
            reset_adapter(loaded.model, 1)
            cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-2, precision=precision)
            stats = train_adapter(loaded.model, prompts, responses, pad, cfg, seed=3, show_progress=False)
            results[precision] = (stats, set(seen))
    finally:
        hook.remove()
    assert results["fp32"][1] == {torch.float32} and results["bf16"][1] == {torch.bfloat16}
    assert (results["fp32"][0].precision, results["bf16"][0].precision) == ("fp32", "bf16")
    assert results["bf16"][0].mean_loss == pytest.approx(results["fp32"][0].mean_loss, rel=5e-2)
    assert all(p.dtype == torch.float32 for n, p in loaded.model.named_parameters() if "lora_" in n)


def test_bf16_scoring_keeps_statistics_fp32_and_close_to_fp32(loaded):
    from star.engine.precision import autocast

    prompts, responses = _pairs(loaded)
    pad = loaded.tokenizer.pad_token_id
    full = score_pairs(loaded.model, prompts, responses, pad, batch_size=8, show_progress=False)
    with autocast("bf16", torch.device("cpu")):
        half = score_pairs(loaded.model, prompts, responses, pad, batch_size=8, show_progress=False)
    assert half.pe.dtype == np.float64 and np.isfinite(half.pe).all() and np.isfinite(half.me).all()
    np.testing.assert_allclose(half.pe, full.pe, rtol=5e-2)
    np.testing.assert_allclose(half.me, full.me, rtol=5e-2)
    assert not np.array_equal(half.pe, full.pe)  # the matmuls really ran in bf16


def test_al_precision_applies_to_pool_scoring_and_not_to_evaluation(tiny_run_config, monkeypatch):
    from star import loop
    from star.engine import placement

    seen: dict[str, set] = {"score": set(), "eval": set()}
    phase = {"now": "score"}
    real_load, real_eval = placement.load_model, loop.rounds.evaluate

    def load_and_watch(*args, **kwargs):
        m = real_load(*args, **kwargs)
        q = next(mod for n, mod in m.model.named_modules() if n.endswith("q_proj.base_layer"))
        q.register_forward_hook(lambda mod, a, out: seen[phase["now"]].add(out.dtype) if not mod.training else None)
        return m

    def eval_and_mark(*args, **kwargs):
        phase["now"] = "eval"
        try:
            return real_eval(*args, **kwargs)
        finally:
            phase["now"] = "score"

    monkeypatch.setattr(placement, "load_model", load_and_watch)
    monkeypatch.setattr(loop.rounds, "evaluate", eval_and_mark)
    cfg = {**tiny_run_config, "al": {**tiny_run_config["al"], "precision": "bf16", "rounds": 2}}
    loop.run(cfg, show_progress=False)
    assert seen["score"] == {torch.bfloat16} and seen["eval"] == {torch.float32}


@pytest.mark.parametrize("world, teardown", [("1", True), ("2", False)])
def test_launched_worker_exits_with_its_code_and_flushed_output_without_teardown(world, teardown):
    """A worker of a multi-process launch skips interpreter teardown (where gloo's threads could abort it)."""
    import os
    import subprocess
    import sys

    code = ("import atexit, logging; from star.parallel.distributed import exit_process; "
            "atexit.register(lambda: print('teardown')); logging.basicConfig(); logging.warning('logged'); "
            "print('done', end=''); exit_process(3)")
    env = {**os.environ, "WORLD_SIZE": world}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3
    assert done.stdout.startswith("done") and "logged" in done.stderr  # nothing buffered is lost
    assert ("teardown" in done.stdout) is teardown
