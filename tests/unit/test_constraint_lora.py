"""Constraint LoRA: weight decay on B only, fresh adapters per seed, and MC dropout while scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from star.config import LoraSettings, ModelConfig, TrainConfig
from star.engine.adapter import adapter_disabled, lora_parameters, mc_dropout, reset_adapter
from star.engine.modeling import load_model
from star.engine.scoring import score_pairs
from star.engine.seeded_dropout import RowSeededDropout
from star.engine.training import make_optimizer

PAD = 0
PROMPTS = [[2, 40, 41, 42, 43], [2, 50], [2, 60, 61, 62, 63, 64, 65, 66], [2, 70, 71], [2, 33]]
RESPONSES = [[80, 81, 1], [90, 91, 92, 93, 94, 1], [100, 101], [110, 111, 112, 113, 114, 115, 116, 117], [7, 1]]


@pytest.fixture
def model(tiny_model_dir: Path) -> nn.Module:
    loaded = load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4, dropout=0.1))
    return loaded.model


def set_b_nonzero(model: nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model)[1]:
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def training_modules(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if m.training]


def score(model: nn.Module, **kw) -> tuple[np.ndarray, np.ndarray]:
    u = score_pairs(model, PROMPTS, RESPONSES, PAD, batch_size=kw.pop("batch_size", 16), show_progress=False, **kw)
    return u.pe, u.me


# --- weight decay on B only --------------------------------------------------------------------


def test_optimizer_groups_decay_b_only(model: nn.Module) -> None:
    opt = make_optimizer(model, TrainConfig(weight_decay_b=0.5, lr=1e-2))
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"lora_A", "lora_B"}
    assert groups["lora_B"]["weight_decay"] == 0.5
    assert groups["lora_A"]["weight_decay"] == 0.0
    a, b = lora_parameters(model)
    n_layers = 2 * 7  # 2 decoder layers x q,k,v,o,gate,up,down
    assert len(a) == len(b) == n_layers
    assert {id(p) for p in groups["lora_A"]["params"]} == {id(p) for p in a}
    assert {id(p) for p in groups["lora_B"]["params"]} == {id(p) for p in b}
    # Only the adapter is trainable; the base model stays frozen.
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in a + b}


def test_zero_gradient_step_shrinks_b_by_exactly_one_minus_lr_wd_and_leaves_a(model: nn.Module) -> None:
    lr, wd = 0.1, 0.5
    set_b_nonzero(model)
    opt = make_optimizer(model, TrainConfig(weight_decay_b=wd, lr=lr))
    a, b = lora_parameters(model)
    a0 = [p.detach().clone() for p in a]
    b0 = [p.detach().clone() for p in b]
    for p in a + b:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, p0 in zip(b, b0):
        torch.testing.assert_close(p.detach(), p0 * (1 - lr * wd), rtol=1e-6, atol=0.0)
        assert not torch.equal(p.detach(), p0)
    for p, p0 in zip(a, a0):
        assert torch.equal(p.detach(), p0)
    # A second step shrinks B by the same factor again.
    opt.step()
    for p, p0 in zip(b, b0):
        torch.testing.assert_close(p.detach(), p0 * (1 - lr * wd) ** 2, rtol=1e-6, atol=0.0)


def test_weight_decay_a_is_configurable(model: nn.Module) -> None:
    opt = make_optimizer(model, TrainConfig(weight_decay_b=0.0, weight_decay_a=0.2, lr=0.1))
    a, b = lora_parameters(model)
    set_b_nonzero(model)
    a0, b0 = [p.detach().clone() for p in a], [p.detach().clone() for p in b]
    for p in a + b:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, p0 in zip(a, a0):
        torch.testing.assert_close(p.detach(), p0 * (1 - 0.1 * 0.2), rtol=1e-6, atol=0.0)
    for p, p0 in zip(b, b0):
        assert torch.equal(p.detach(), p0)


# --- fresh adapters --------------------------------------------------------------------------


def test_reset_adapter_zeroes_b_and_is_deterministic_per_seed(model: nn.Module) -> None:
    set_b_nonzero(model)
    rng_before = torch.get_rng_state()
    reset_adapter(model, seed=5)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    a1 = [p.detach().clone() for p in lora_parameters(model)[0]]
    assert all(torch.count_nonzero(p) == 0 for p in lora_parameters(model)[1])
    assert all(torch.count_nonzero(p) > 0 for p in a1)

    set_b_nonzero(model, seed=1)
    reset_adapter(model, seed=5)
    a2 = [p.detach().clone() for p in lora_parameters(model)[0]]
    assert all(torch.equal(x, y) for x, y in zip(a1, a2))
    assert all(torch.count_nonzero(p) == 0 for p in lora_parameters(model)[1])

    reset_adapter(model, seed=6)
    a3 = [p.detach().clone() for p in lora_parameters(model)[0]]
    assert all(not torch.equal(x, y) for x, y in zip(a1, a3))


def test_reset_adapter_makes_the_model_equal_the_base(model: nn.Module) -> None:
    set_b_nonzero(model)
    with adapter_disabled(model):
        base_pe, base_me = score(model)
    tuned_pe, _ = score(model)
    assert np.abs(tuned_pe - base_pe).max() > 1e-3
    reset_adapter(model, seed=0)
    pe, me = score(model)
    np.testing.assert_allclose(pe, base_pe, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(me, base_me, rtol=1e-6, atol=1e-6)


# --- MC dropout ------------------------------------------------------------------------------


def test_mc_passes_of_the_lora_model_differ_and_reproduce_per_seed(model: nn.Module) -> None:
    set_b_nonzero(model)
    pe, me = score(model, passes=3, seed=11)
    n = len(PROMPTS)
    assert pe.shape == (n, 3) and me.shape == (n, 3)
    for x in (pe, me):
        for i, j in ((0, 1), (0, 2), (1, 2)):
            assert np.abs(x[:, i] - x[:, j]).max() > 1e-4, f"MC passes {i} and {j} are identical"
    pe2, me2 = score(model, passes=3, seed=11)
    np.testing.assert_array_equal(pe, pe2)
    np.testing.assert_array_equal(me, me2)
    pe3, _ = score(model, passes=3, seed=12)
    assert not np.array_equal(pe, pe3)
    assert training_modules(model) == []


def test_mc_passes_do_not_depend_on_the_global_rng_and_leave_it_alone(model: nn.Module) -> None:
    set_b_nonzero(model)
    torch.manual_seed(0)
    pe_a, _ = score(model, passes=3, seed=11)
    state = torch.get_rng_state()
    torch.manual_seed(999)
    state_999 = torch.get_rng_state()
    pe_b, _ = score(model, passes=3, seed=11)
    assert torch.equal(torch.get_rng_state(), state_999)
    assert not torch.equal(state, state_999)
    np.testing.assert_array_equal(pe_a, pe_b)


def test_mc_off_is_deterministic_and_equals_eval_mode(model: nn.Module) -> None:
    set_b_nonzero(model)
    pe, me = score(model, passes=1, seed=11)
    assert pe.shape == (len(PROMPTS), 1)
    pe2, me2 = score(model, passes=1, seed=99)
    np.testing.assert_array_equal(pe, pe2)
    np.testing.assert_array_equal(me, me2)
    mc_pe, _ = score(model, passes=3, seed=11)
    assert np.abs(mc_pe - pe).max() > 1e-4  # dropout really was off without mc
    assert training_modules(model) == []


def test_base_model_passes_are_identical_under_mc(model: nn.Module) -> None:
    set_b_nonzero(model)
    with adapter_disabled(model):
        pe, me = score(model, passes=3, seed=11)
        again, _ = score(model, passes=3, seed=12)
    assert pe.shape == (len(PROMPTS), 3)
    for x in (pe, me):
        np.testing.assert_allclose(x, np.repeat(x[:, :1], 3, axis=1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pe, again, rtol=1e-6, atol=1e-6)
    tuned, _ = score(model)
    assert np.abs(tuned[:, 0] - pe[:, 0]).max() > 1e-3  # the adapter is back on after the context
    assert training_modules(model) == []


def test_mc_dropout_context_enables_only_lora_dropout(model: nn.Module) -> None:
    model.train()  # even a model left in training mode is scored with everything else in eval
    with mc_dropout(model, enabled=True):
        on = training_modules(model)
        assert on, "no module is stochastic under mc_dropout"
        assert all("lora_dropout" in name for name in on)
        dropouts = [n for n, m in model.named_modules() if isinstance(m, (nn.Dropout, RowSeededDropout)) and "lora_dropout" in n]
        assert set(dropouts) <= set(on) and len(dropouts) == 14
    assert all(m.training for m in model.modules())  # restored as it was
    model.eval()
    with mc_dropout(model, enabled=False):
        assert training_modules(model) == []
    with mc_dropout(model, enabled=True):
        pass
    assert training_modules(model) == []


def test_mc_dropout_restores_eval_mode_after_an_exception(model: nn.Module) -> None:
    model.eval()
    with pytest.raises(RuntimeError), mc_dropout(model, enabled=True):
        raise RuntimeError("boom")
    assert training_modules(model) == []


# --- coupled L2 penalty on B (train.b_penalty) -------------------------------------------------


def _first_step_grads(model: nn.Module, monkeypatch, config: TrainConfig) -> tuple[list, list]:
    """(A grads, B grads) seen by the optimizer's first step of train_adapter (one step: all rows, 1 epoch)."""
    from star.engine import training

    seen: list[tuple[list, list]] = []
    original = training.make_optimizer

    def capturing(m: nn.Module, c: TrainConfig) -> torch.optim.Optimizer:
        opt = original(m, c)
        a, b = lora_parameters(m)
        opt.register_step_pre_hook(lambda *_: seen.append(([p.grad.clone() for p in a], [p.grad.clone() for p in b])))
        return opt

    monkeypatch.setattr(training, "make_optimizer", capturing)
    training.train_adapter(model, PROMPTS, RESPONSES, PAD, config, seed=3, show_progress=False)
    return seen[0]


def _fresh(model: nn.Module) -> list[torch.Tensor]:
    reset_adapter(model, seed=0)
    set_b_nonzero(model, seed=4)
    return [p.detach().clone() for p in lora_parameters(model)[1]]


def test_b_penalty_adds_exactly_two_beta_b_to_b_gradient_and_nothing_to_a(model: nn.Module, monkeypatch) -> None:
    beta = 0.3
    settings = {"batch_size": len(PROMPTS), "epochs": 1, "lr": 1e-3, "precision": "fp32", "weight_decay_b": 0.0}
    b0 = _fresh(model)
    a_plain, b_plain = _first_step_grads(model, monkeypatch, TrainConfig(**settings))
    assert all(torch.equal(x, y) for x, y in zip(_fresh(model), b0))  # the same start: A from the same seed, B again
    a_pen, b_pen = _first_step_grads(model, monkeypatch, TrainConfig(**settings, b_penalty=beta))
    for g, g0 in zip(a_pen, a_plain):
        assert torch.equal(g, g0)  # A: no penalty, the very same gradient
    for g, g0, b in zip(b_pen, b_plain, b0):
        torch.testing.assert_close(g - g0, 2 * beta * b, rtol=1e-5, atol=1e-7)


def test_b_penalty_term_alone_has_gradient_two_beta_b(model: nn.Module) -> None:
    from star.engine.training import b_penalty

    set_b_nonzero(model, seed=2)
    a, b = lora_parameters(model)
    for p in a + b:
        p.requires_grad_(True)
        p.grad = None
    loss = b_penalty(b, 0.7)
    torch.testing.assert_close(loss, 0.7 * sum((p.detach() ** 2).sum() for p in b))
    loss.backward()
    for p in b:
        torch.testing.assert_close(p.grad, 1.4 * p.detach(), rtol=1e-6, atol=0.0)
    assert all(p.grad is None for p in a)


def test_b_penalty_zero_never_builds_the_term_and_trains_bit_identically(model: nn.Module, monkeypatch) -> None:
    from star.engine import training

    def trained(config: TrainConfig) -> list[torch.Tensor]:
        reset_adapter(model, seed=1)
        training.train_adapter(model, PROMPTS, RESPONSES, PAD, config, seed=5, show_progress=False)
        return [p.detach().clone() for p in lora_parameters(model)[0] + lora_parameters(model)[1]]

    default = trained(TrainConfig(batch_size=2, epochs=2))

    def forbidden(*_a, **_k):
        raise AssertionError("b_penalty computed with train.b_penalty=0")

    monkeypatch.setattr(training, "b_penalty", forbidden)
    zero = trained(TrainConfig(batch_size=2, epochs=2, b_penalty=0.0))
    assert all(torch.equal(x, y) for x, y in zip(default, zero))


def test_b_penalty_shrinks_b(model: nn.Module) -> None:
    from star.engine.training import train_adapter

    def b_norm(beta: float) -> float:
        reset_adapter(model, seed=1)
        train_adapter(model, PROMPTS, RESPONSES, PAD, TrainConfig(batch_size=2, epochs=3, lr=1e-2, weight_decay_b=0.0,
                                                                   b_penalty=beta), seed=5, show_progress=False)
        return float(sum((p.detach() ** 2).sum() for p in lora_parameters(model)[1]))

    assert b_norm(50.0) < 0.5 * b_norm(0.0)


def test_b_penalty_is_refused_under_sharded_engines() -> None:
    from star.engine.training import check_b_penalty
    from star.errors import ConfigError
    from star.parallel.distributed import Dist

    check_b_penalty(TrainConfig(b_penalty=0.1), Dist(rank=0, world=2))  # DDP: fine
    check_b_penalty(TrainConfig(b_penalty=0.0), Dist(rank=0, world=2, fsdp=object()))  # off: fine
    for dist in (Dist(rank=0, world=2, fsdp=object()), Dist(rank=0, world=2, deepspeed=object())):
        with pytest.raises(ConfigError, match="train.b_penalty=0.1 is not supported under") as err:
            check_b_penalty(TrainConfig(b_penalty=0.1), dist)
        assert "train.b_penalty=0" in err.value.hint


# --- MC dropout probability (al.mc_dropout_p) -----------------------------------------------------


def _lora_dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for n, m in model.named_modules() if isinstance(m, RowSeededDropout)]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.6])
def test_mc_dropout_p_sets_the_masks_keep_rate(model: nn.Module, p: float) -> None:
    from star.engine.seeded_dropout import row_seeds

    drop = _lora_dropouts(model)[3]
    x = torch.ones(4, 256, 128)  # (B, T, d): 131,072 draws, std of the keep rate ~0.0014
    with mc_dropout(model, enabled=True, p=p), row_seeds([1, 2, 3, 4], [256] * 4):
        y = drop(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.006
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))  # inverted dropout at p
    assert {m.p for m in _lora_dropouts(model)} == {0.1}  # restored: training keeps lora.dropout


def test_mc_dropout_p_null_or_equal_to_lora_dropout_is_bit_identical(model: nn.Module) -> None:
    from star.engine.adapter import dropout_rate

    set_b_nonzero(model)
    pe, me = score(model, passes=3, seed=11)
    with dropout_rate(model, None):
        pe_null, me_null = score(model, passes=3, seed=11)
    with dropout_rate(model, 0.1):  # = lora.dropout
        pe_same, me_same = score(model, passes=3, seed=11)
    with dropout_rate(model, 0.5):
        pe_half, _ = score(model, passes=3, seed=11)
    for a, b in ((pe, pe_null), (me, me_null), (pe, pe_same), (me, me_same)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(pe_half - pe).max() > 1e-4
    with dropout_rate(model, 0.5):
        np.testing.assert_array_equal(score(model, passes=3, seed=11)[0], pe_half)  # still seeded per example


def test_mc_dropout_p_works_when_training_has_no_dropout(tiny_model_dir: Path) -> None:
    from star.engine.adapter import dropout_rate

    plain = load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4, dropout=0.0)).model
    assert len(_lora_dropouts(plain)) == 14  # peft's Identity became a p = 0 seeded dropout
    set_b_nonzero(plain)
    pe, _ = score(plain, passes=3, seed=11)
    np.testing.assert_array_equal(pe, np.repeat(pe[:, :1], 3, axis=1))  # p = 0: the passes are the same
    with dropout_rate(plain, 0.3):
        pe_mc, _ = score(plain, passes=3, seed=11)
    assert np.abs(pe_mc[:, 0] - pe_mc[:, 1]).max() > 1e-4


def test_mc_settings_are_validated() -> None:
    from star.config import build_config
    from star.errors import ConfigError

    assert build_config().al.mc_dropout_p is None and build_config().train.b_penalty == 0.0
    assert build_config(overrides=["al.mc_dropout_p=0.3", "train.b_penalty=0.01"]).al.mc_dropout_p == 0.3
    with pytest.raises(ConfigError, match="al.mc_dropout_p"):
        build_config(overrides=["al.mc_dropout_p=1.0"])
    with pytest.raises(ConfigError, match="train.b_penalty"):
        build_config(overrides=["train.b_penalty=-1"])
