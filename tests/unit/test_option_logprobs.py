"""log p(option | prompt) of closed answer sets: by hand, shared prefix == full pairs, MC passes, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_helpers import tuned_tiny_model
from torch import nn

from star.engine.scoring import full_pair_logprobs, option_logprobs, score_options

PAD = 0
# Prompts of different lengths (not sorted), options of different lengths (the last one a single token).
PROMPTS = [[2, 40, 41, 42, 43], [2, 50], [2, 60, 61, 62, 63, 64, 65, 66], [2, 70, 71], [2, 75, 76, 77]]
OPTIONS = [[80, 81, 1], [90, 1], [100, 101, 102, 103, 1], [110]]


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir: Path) -> nn.Module:
    """The tiny model with LoRA (dropout 0.3) whose B is non-zero, so the adapter and its dropout matter."""
    return tuned_tiny_model(tiny_model_dir, seed=7, dropout=0.3).model


def by_hand(model: nn.Module, prompt: list[int], option: list[int]) -> float:
    """log p(option | prompt) from one unpadded full forward's logits (float64)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + option])).logits[0].double(), dim=-1)  # (T, V)
    return sum(float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(option))


def test_option_logprobs_match_a_plain_full_forward(lora_model: nn.Module) -> None:
    got = option_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=3, show_progress=False)
    assert got.shape == (len(PROMPTS), len(OPTIONS), 1)
    want = np.array([[by_hand(lora_model, p, o) for o in OPTIONS] for p in PROMPTS])
    np.testing.assert_allclose(got[:, :, 0], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("passes", [1, 3])
def test_shared_prefix_equals_full_pairs(lora_model: nn.Module, passes: int) -> None:
    """Same numbers from one prompt forward + C option rows as from C full rows, MC-dropout passes included."""
    shared = option_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=6, passes=passes, seed=11,
                             show_progress=False)
    full = full_pair_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=6, passes=passes, seed=11,
                              show_progress=False)
    assert shared.shape == full.shape == (len(PROMPTS), len(OPTIONS), passes)
    np.testing.assert_allclose(shared, full, rtol=1e-5, atol=1e-4)
    if passes > 1:  # the passes really are stochastic, and differ per example
        assert np.ptp(shared, axis=2).max() > 1e-3


def test_mc_passes_do_not_depend_on_batching(lora_model: nn.Module) -> None:
    together = option_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=30, passes=2, seed=5, show_progress=False)
    one_by_one = option_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=2, passes=2, seed=5, show_progress=False)
    np.testing.assert_allclose(one_by_one, together, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("hashed", [False, True])
def test_a_continued_row_gets_the_mask_of_the_whole_sequence(hashed: bool) -> None:
    """starts[b]: positions starts[b].. of the mask one forward over the whole sequence would draw."""
    from star.engine.seeded_dropout import keep_cpu, keep_hashed

    def keep(shape: tuple, seeds: list, lengths: list, starts: list | None = None) -> torch.Tensor:
        if hashed:
            return keep_hashed(torch.Size(shape), seeds, lengths, 3, 0.4, "cpu", starts)
        return keep_cpu(torch.Size(shape), seeds, lengths, 3, 0.4, starts)

    whole = keep((2, 12, 16), [5, 6], [12, 9])  # (B, T, d)
    tail = keep((2, 6, 16), [5, 6], [5, 2], starts=[7, 7])  # positions 7..11 of row 0, 7..8 of row 1
    assert torch.equal(tail[0, :5], whole[0, 7:12]) and torch.equal(tail[1, :2], whole[1, 7:9])
    assert tail[1, 2:].all()  # beyond a row's length: kept (padding)
    if not hashed:  # the CPU stream resumed where the prefix's draw ended: the same masks
        from star.engine.seeded_dropout import continued_draws

        with continued_draws():
            head = keep((2, 7, 16), [5, 6], [7, 7])
            resumed = keep((2, 6, 16), [5, 6], [5, 2], starts=[7, 7])
        assert torch.equal(head, whole[:, :7]) and torch.equal(resumed, tail)


def test_the_shared_prefix_path_is_the_one_taken(lora_model: nn.Module) -> None:
    from star.engine.options import supports_shared_prefix

    assert supports_shared_prefix(lora_model)


def test_single_token_options_need_no_second_forward(lora_model: nn.Module) -> None:
    letters = [[65], [66], [67], [68]]
    got = option_logprobs(lora_model, PROMPTS, letters, PAD, batch_size=4, show_progress=False)
    want = np.array([[by_hand(lora_model, p, o) for o in letters] for p in PROMPTS])
    np.testing.assert_allclose(got[:, :, 0], want, rtol=1e-5, atol=1e-4)


def test_score_options_is_option_uncertainty_of_the_logprobs(lora_model: nn.Module) -> None:
    from star.al.uncertainty import option_uncertainty

    u = score_options(lora_model, PROMPTS, OPTIONS, PAD, batch_size=6, passes=2, seed=3, show_progress=False)
    want = option_uncertainty(full_pair_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=6, passes=2, seed=3,
                                                 show_progress=False))
    np.testing.assert_allclose(u.pe, want.pe, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(u.me, want.me, rtol=1e-5, atol=1e-5)
