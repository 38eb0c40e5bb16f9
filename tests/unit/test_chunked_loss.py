"""The training loss a chunk of rows at a time: the gradient bitwise equal to one cross_entropy call."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from star.config import LoraSettings, ModelConfig, TrainConfig
from star.engine import forward, training
from star.engine.adapter import lora_parameters, reset_adapter
from star.engine.forward import cross_entropy_sum
from star.engine.modeling import load_model

PAD = 0
PROMPTS = [[2, 40, 41, 42, 43], [2, 50], [2, 60, 61, 62, 63, 64, 65, 66], [2, 70, 71], [2, 33], [2, 34, 35]]
RESPONSES = [[80, 81, 1], [90, 91, 92, 93, 94, 1], [100, 101], [110, 111, 112, 113, 114, 115, 116, 117],
             [7, 8, 9, 10, 1], [12, 13, 14, 15, 16, 1]]


def _one_call(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss before chunking: one cross_entropy over the whole (M, V) block."""
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gradient_is_bitwise_the_one_call_gradient_and_the_loss_its_value(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    base = (torch.randn(37, 1000, generator=gen) * 4).to(dtype)  # 37 rows: two full chunks of 16 and a short one
    targets = torch.randint(0, 1000, (37,), generator=gen)
    grads, losses = [], []
    for loss_fn in (_one_call, cross_entropy_sum):
        logits = base.clone().requires_grad_(True)
        loss = loss_fn(logits, targets)
        (loss * 0.37).backward()
        grads.append(logits.grad)
        losses.append(float(loss.detach()))
    assert grads[1].dtype == dtype
    assert torch.equal(grads[0], grads[1])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)


def test_the_loss_is_the_sum_of_minus_log_softmax_at_the_targets() -> None:
    # row 0, target 0: -log(1/2) = log 2; row 1, target 1: logsumexp(2, 0) - 0 = 2 + log(1 + e^-2)
    loss = cross_entropy_sum(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0, 1]))
    assert float(loss) == pytest.approx(math.log(2) + 2 + math.log1p(math.exp(-2)), rel=1e-6)


def test_no_rows_give_a_zero_loss_with_a_gradient_path() -> None:
    logits = torch.zeros(0, 7, requires_grad=True)
    loss = cross_entropy_sum(logits, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert logits.grad is not None and logits.grad.shape == (0, 7)


@pytest.fixture
def model(tiny_model_dir: Path) -> nn.Module:
    return load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4, dropout=0.1)).model


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_with_the_chunked_loss_ends_with_the_one_call_loss_adapter_bit_for_bit(
        model: nn.Module, monkeypatch, precision: str) -> None:
    monkeypatch.setattr(forward, "STATS_CHUNK", 4)  # the tiny batches' 20-odd response rows span several chunks

    def trained() -> list[torch.Tensor]:
        reset_adapter(model, seed=1)
        training.train_adapter(model, PROMPTS, RESPONSES, PAD, TrainConfig(batch_size=6, epochs=2, precision=precision),
                               seed=5, show_progress=False)
        return [p.detach().clone() for p in lora_parameters(model)[0] + lora_parameters(model)[1]]

    chunked = trained()
    monkeypatch.setattr(training, "cross_entropy_sum", _one_call)
    one_call = trained()
    assert any(not torch.equal(p, torch.zeros_like(p)) for p in chunked[len(chunked) // 2:])  # B has trained
    assert all(torch.equal(x, y) for x, y in zip(chunked, one_call))
