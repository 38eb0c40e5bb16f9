"""bench/release_baseline.py computes what star computes: same PE/ME, same training loss.

The speed benchmark (bench/round_speed.py) compares star's batched path against this
re-implementation of the release's per-example pipeline; the comparison only means something
if both compute the same quantities. Nothing here is timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from star.engine.batching import collate_pairs
from star.engine.forward import response_loss
from star.engine.scoring import score_pairs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import release_baseline
from tiny_helpers import tuned_tiny_model

PAD = 0
PROMPTS = [[2, 40, 41, 42, 43], [2, 50], [2, 60, 61, 62, 63, 64, 65, 66]]
RESPONSES = [[80, 81, 1], [90, 91, 92, 93, 94, 1], [100, 101, 1]]


@pytest.fixture
def lora_model(tiny_model_dir: Path) -> nn.Module:
    """The tiny model with a non-zero LoRA B, so the adapter changes the scores."""
    return tuned_tiny_model(tiny_model_dir, seed=7, dropout=0.1).model


def test_release_scores_equal_ours(lora_model: nn.Module) -> None:
    base_pe, base_me = release_baseline.score_pool(lora_model, PROMPTS, RESPONSES)
    ours = score_pairs(lora_model, PROMPTS, RESPONSES, PAD, batch_size=8, show_progress=False)
    assert base_pe.shape == ours.pe.shape == (3, 1)
    np.testing.assert_allclose(ours.pe, base_pe, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.me, base_me, rtol=1e-4, atol=1e-4)


def test_release_padded_loss_equals_response_loss(lora_model: nn.Module) -> None:
    """Padding to 384 with labels -100 off the answer gives our answer-token loss."""
    ids, mask, labels = release_baseline.pad_fixed(PROMPTS, RESPONSES, PAD, length=32)
    assert ids.shape == (3, 32)
    with torch.no_grad():
        theirs = lora_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        ours = response_loss(lora_model, collate_pairs(PROMPTS, RESPONSES, PAD))
    assert float(theirs) == pytest.approx(float(ours), rel=1e-5)


def test_ablation_variants_compute_the_same_scores(lora_model: nn.Module) -> None:
    """Each one-change-at-a-time scorer of bench/ablations.py still computes our PE/ME."""
    import ablations

    ours = score_pairs(lora_model, PROMPTS, RESPONSES, PAD, batch_size=8, show_progress=False)
    for name, (variant, _note) in ablations.SCORE_VARIANTS.items():
        got = ablations.score_variant(lora_model, PROMPTS, RESPONSES, PAD, 2, 1, variant)
        np.testing.assert_allclose(got[:, 0], ours.pe[:, 0], rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got[:, 1], ours.me[:, 0], rtol=1e-4, atol=1e-4, err_msg=name)
    with torch.no_grad():
        batch = collate_pairs(PROMPTS, RESPONSES, PAD)
        assert float(ablations._hf_loss(lora_model, batch)) == pytest.approx(float(response_loss(lora_model, batch)), rel=1e-5)
