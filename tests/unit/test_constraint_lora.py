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


def score(model: nn.Module, **kw) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN003
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
