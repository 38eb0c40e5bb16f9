"""PE / ME over response positions: checked against a plain full-logits forward computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_helpers import tuned_tiny_model
from torch import nn

from star.engine import forward
from star.engine.batching import collate_pairs
from star.engine.forward import sequence_scores, token_stats
from star.engine.scoring import score_pairs

PAD = 0
# Hand-built (prompt, response) id lists of different lengths, deliberately not sorted by length.
PROMPTS = [[2, 40, 41, 42, 43], [2, 50], [2, 60, 61, 62, 63, 64, 65, 66], [2, 70, 71]]
RESPONSES = [[80, 81, 1], [90, 91, 92, 93, 94, 1], [100], [110, 111, 112, 113, 114, 115, 116, 117]]


@pytest.fixture
def lora_model(tiny_model_dir: Path) -> nn.Module:
    """The tiny model with a LoRA adapter whose B is non-zero (so the adapter changes the outputs)."""
    return tuned_tiny_model(tiny_model_dir, seed=123, dropout=0.1).model


@pytest.fixture
def base_model(tiny_model_dir: Path) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()


def by_hand(model: nn.Module, prompt: list[int], response: list[int]) -> tuple[float, float]:
    """PE and ME of one unpadded sequence from the model's full logits (float64)."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0].double()  # (T, V)
    logp = torch.log_softmax(logits, dim=-1)
    pe, me = 0.0, 0.0
    for i, tok in enumerate(response):
        row = logp[len(prompt) - 1 + i]  # logits at position t predict token t+1
        pe -= float(row[tok])
        me += float(-(row.exp() * row).sum())
    return pe, me


class FullLogitsOnly(nn.Module):
    """A causal LM exposing only forward(): exercises the generic full-logits fallback path."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def expected(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    pairs = [by_hand(model, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    return np.array([x[0] for x in pairs]), np.array([x[1] for x in pairs])


# --- token_stats on hand-made logits ------------------------------------------------------


def test_token_stats_uniform_distribution_has_entropy_log_v() -> None:
    V = 7
    logits = torch.zeros(3, V)
    logp, ent = token_stats(logits, torch.tensor([0, 3, 6]))
    torch.testing.assert_close(ent, torch.full((3,), math.log(V)))
    torch.testing.assert_close(logp, torch.full((3,), -math.log(V)))


def test_token_stats_peaked_distribution() -> None:
    a = 5.0
    logits = torch.tensor([[a, 0.0, 0.0, 0.0], [0.0, 0.0, 40.0, 0.0]])
    logp, ent = token_stats(logits, torch.tensor([0, 1]))
    z = math.exp(a) + 3
    p = [math.exp(a) / z, 1 / z, 1 / z, 1 / z]
    assert logp[0].item() == pytest.approx(math.log(p[0]), rel=1e-5)
    assert ent[0].item() == pytest.approx(-sum(q * math.log(q) for q in p), rel=1e-5)
    # Nearly one-hot: entropy ~ 0 and the log-probability of an off-peak target is ~ -40.
    assert 0.0 <= ent[1].item() < 1e-6
    assert logp[1].item() == pytest.approx(-40.0, abs=1e-4)


def test_token_stats_entropy_is_finite_with_masked_logits() -> None:
    logits = torch.tensor([[0.0, 0.0, float("-inf")]])
    logp, ent = token_stats(logits, torch.tensor([1]))
    assert logp.item() == pytest.approx(-math.log(2))
    assert ent.item() == pytest.approx(math.log(2))


def test_token_stats_is_float32_and_independent_of_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(5, 11, generator=gen) * 3).to(torch.bfloat16)
    targets = torch.tensor([0, 10, 4, 4, 7])
    whole = token_stats(logits, targets)
    monkeypatch.setattr(forward, "LM_HEAD_CHUNK", 2)
    chunked = token_stats(logits, targets)
    assert whole[0].dtype == torch.float32 and whole[1].dtype == torch.float32
    torch.testing.assert_close(whole, chunked)
    ref = torch.log_softmax(logits.double(), dim=-1)
    torch.testing.assert_close(whole[0].double(), ref[torch.arange(5), targets], rtol=1e-5, atol=1e-5)


# --- collate_pairs ---------------------------------------------------------------------------


def test_collate_pairs_masks_and_targets_on_a_hand_example() -> None:
    batch = collate_pairs([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 9, 10], [8, 11, 12, 13, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Row 0: logits at positions 2, 3 predict 9, 10; row 1: positions 0, 1, 2 predict 11, 12, 13.
    assert batch.predict_mask.tolist() == [[False, False, True, True, False], [True, True, True, False, False]]
    assert batch.targets.tolist() == [9, 10, 11, 12, 13]
    assert batch.rows.tolist() == [0, 0, 1, 1, 1]
    assert batch.size == 2


def test_collate_pairs_never_targets_prompt_or_padding() -> None:
    batch = collate_pairs(PROMPTS, RESPONSES, pad_id=PAD)
    assert batch.targets.tolist() == [t for r in RESPONSES for t in r]
    assert batch.predict_mask.sum(1).tolist() == [len(r) for r in RESPONSES]
    assert batch.rows.tolist() == [i for i, r in enumerate(RESPONSES) for _ in r]


# --- sequence_scores against a full-logits forward ------------------------------------------


@pytest.mark.parametrize("wrap", [False, True], ids=["decoder+head", "full-logits-fallback"])
def test_sequence_scores_match_hand_computation_on_the_base_model(base_model: nn.Module, wrap: bool) -> None:
    model = FullLogitsOnly(base_model) if wrap else base_model
    want_pe, want_me = expected(base_model)
    with torch.no_grad():
        pe, me = sequence_scores(model, collate_pairs(PROMPTS, RESPONSES, PAD))
    np.testing.assert_allclose(pe.numpy(), want_pe, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(me.numpy(), want_me, rtol=1e-4, atol=1e-4)
    # Sanity of the reference itself: ME over N positions is at most N log V, PE is positive.
    V = base_model.config.vocab_size
    assert all(0 < m <= len(r) * math.log(V) + 1e-6 for m, r in zip(want_me, RESPONSES))
    assert (want_pe > 0).all()


def test_sequence_scores_padding_does_not_change_results(base_model: nn.Module) -> None:
    with torch.no_grad():
        pe_b, me_b = sequence_scores(base_model, collate_pairs(PROMPTS, RESPONSES, PAD))
        singles = [sequence_scores(base_model, collate_pairs([p], [r], PAD)) for p, r in zip(PROMPTS, RESPONSES)]
    torch.testing.assert_close(pe_b, torch.cat([s[0] for s in singles]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(me_b, torch.cat([s[1] for s in singles]), rtol=1e-5, atol=1e-5)


def test_sequence_scores_of_the_lora_model_include_the_adapter(lora_model: nn.Module, base_model: nn.Module) -> None:
    want_pe, want_me = expected(lora_model)
    with torch.no_grad():
        pe, me = sequence_scores(lora_model, collate_pairs(PROMPTS, RESPONSES, PAD))
    np.testing.assert_allclose(pe.numpy(), want_pe, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(me.numpy(), want_me, rtol=1e-4, atol=1e-4)
    base_pe, _ = expected(base_model)
    assert np.abs(want_pe - base_pe).max() > 1e-2  # the non-zero adapter really changes the model


# --- score_pairs -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_score_pairs_matches_hand_computation_in_input_order(base_model: nn.Module, batch_size: int) -> None:
    want_pe, want_me = expected(base_model)
    u = score_pairs(base_model, PROMPTS, RESPONSES, PAD, batch_size=batch_size, show_progress=False)
    assert u.pe.shape == (len(PROMPTS), 1) and u.me.shape == (len(PROMPTS), 1)
    np.testing.assert_allclose(u.pe[:, 0], want_pe, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(u.me[:, 0], want_me, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(u.mean("pe"), want_pe, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(u.mean("me"), want_me, rtol=1e-4, atol=1e-4)


def test_score_pairs_batch_equals_one_at_a_time(lora_model: nn.Module) -> None:
    together = score_pairs(lora_model, PROMPTS, RESPONSES, PAD, batch_size=8, show_progress=False)
    for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES)):
        alone = score_pairs(lora_model, [p], [r], PAD, batch_size=8, show_progress=False)
        np.testing.assert_allclose(together.pe[i], alone.pe[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(together.me[i], alone.me[0], rtol=1e-5, atol=1e-5)


def test_option_uncertainty_against_hand_values() -> None:
    """Closed-set label-free scores: entropy of the renormalised option distribution, -log of its max."""
    import math

    from star.al.uncertainty import option_uncertainty

    # one example, two options with log p = log 0.2 and log 0.6 (renormalised: 0.25, 0.75), one pass
    logp = np.log(np.array([[[0.2], [0.6]]]))
    u = option_uncertainty(logp)
    assert u.me[0, 0] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert u.pe[0, 0] == pytest.approx(-math.log(0.75))
    # uniform over 4 options: maximal entropy log 4, PE log 4
    flat = option_uncertainty(np.full((1, 4, 2), -3.0))
    np.testing.assert_allclose(flat.me, math.log(4)) and np.testing.assert_allclose(flat.pe, math.log(4))
