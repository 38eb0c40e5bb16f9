"""Options for scaling: 4-bit base errors, gradient checkpointing, batch-invariant MC dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from star.batching import encode_prompts, encode_responses
from star.cli import main
from star.config import LoraSettings, ModelConfig, TrainConfig
from star.modeling import load_model, reset_adapter
from star.scoring import score_pairs
from star.training import train_adapter

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
    one = score_pairs(loaded.model, prompts, responses, pad, batch_size=3, passes=3, mc=True, seed=5, show_progress=False)
    many = score_pairs(loaded.model, prompts, responses, pad, batch_size=12, passes=3, mc=True, seed=5, show_progress=False)
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


@pytest.mark.parametrize("flag, engine", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_parameter_sharding_launch_is_refused_before_the_model_loads(flag, engine, tiny_run_config, tmp_path,
                                                                       monkeypatch, capsys):
    import yaml

    monkeypatch.setenv(flag, "true")
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(tiny_run_config))
    assert main(["run", "--quiet", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert engine in err and flag in err and "ddp.yaml" in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_precision_setting_picks_the_autocast_dtype(monkeypatch):
    from star.precision import autocast_dtype

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
    from star.precision import autocast

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
    import star.loop as loop

    seen: dict[str, set] = {"score": set(), "eval": set()}
    phase = {"now": "score"}
    real_load, real_eval = loop.load_model, loop.evaluate

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

    monkeypatch.setattr(loop, "load_model", load_and_watch)
    monkeypatch.setattr(loop, "evaluate", eval_and_mark)
    cfg = {**tiny_run_config, "al": {**tiny_run_config["al"], "precision": "bf16", "rounds": 2}}
    loop.run(cfg, show_progress=False)
    assert seen["score"] == {torch.bfloat16} and seen["eval"] == {torch.float32}
