"""PE/ME taken while decoding equal a teacher-forced pass over the same answer ids, within fp32 rounding.

The tiny random model (fp32) with a non-zero LoRA B, prompts of different lengths left-padded
together and across batches; answers that stop at EOS, that hit max_new_tokens, that stop at a
task's completion check (with pad == EOS: the row's own tokens only, no padding EOS), that are
trimmed to nothing, and greedy choices made under a generation-config repetition penalty.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tiny_helpers import RenamedTokenizer, tuned_tiny_model
from torch import nn

from star.engine import decode, generation
from star.engine.adapter import adapter_disabled
from star.engine.generation import Generation, generate
from star.engine.scoring import greedy_uncertainty, score_pairs

# Prompts of different lengths, not sorted: left padding differs per row and per batch.
PROMPTS = [[2] + list(range(40 + 7 * i, 40 + 7 * i + k)) for i, k in enumerate((3, 9, 1, 6, 12, 4, 2, 8))]
RTOL = 1e-6  # fp32: ~1e-7 per term; cached decoding and a full forward round differently
BATCH = 3  # generation batches: several, each left-padded


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    """The tiny model with LoRA whose B is non-zero, so the adapter changes the scores."""
    return tuned_tiny_model(tiny_model_dir, seed=7, dropout=0.3)


def _teacher_forced(model: nn.Module, gens: list[Generation], pad: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) PE and ME of the answers' ids from the scoring pass (a second, teacher-forced forward)."""
    u = score_pairs(model, PROMPTS, [g.token_ids or [eos] for g in gens], pad, batch_size=BATCH, show_progress=False)
    return u.pe[:, 0], u.me[:, 0]


def _assert_fused_equal(model: nn.Module, gens: list[Generation], pad: int, eos: int) -> None:
    pe, me = _teacher_forced(model, gens, pad, eos)
    rows = [i for i, g in enumerate(gens) if g.token_ids]
    assert rows and all(gens[i].pe is not None and gens[i].me is not None for i in rows)
    np.testing.assert_allclose([gens[i].pe for i in rows], pe[rows], rtol=RTOL)
    np.testing.assert_allclose([gens[i].me for i in rows], me[rows], rtol=RTOL)
    assert np.ptp(pe[rows]) > 1e-3  # the answers' scores differ by far more than the tolerance


def _stop_token(model: nn.Module, tok, max_new: int) -> int:
    """A token some greedy answers produce before their last step and others never produce."""
    answers = [g.token_ids for g in generate(model, tok, PROMPTS, max_new, BATCH, show_progress=False)]
    for t in sorted({t for a in answers for t in a[:-1]}):
        if any(t not in a for a in answers):
            return t
    raise AssertionError("the tiny model's greedy answers share every token: no stop token to test with")


@pytest.mark.parametrize("base", [False, True], ids=["tuned", "adapter-off"])
def test_answers_stopping_at_eos_or_max_new_tokens(loaded, base: bool) -> None:
    model, max_new = loaded.model, 10
    with adapter_disabled(model) if base else contextlib.nullcontext():
        eos = _stop_token(model, loaded.tokenizer, max_new)
        tok = RenamedTokenizer(loaded.tokenizer, eos=eos, pad=0)
        gens = generate(model, tok, PROMPTS, max_new, BATCH, show_progress=False, stats=True)
        assert any(g.token_ids[-1] == eos for g in gens)  # stopped at EOS (kept, and scored)
        assert any(len(g.token_ids) == max_new and eos not in g.token_ids for g in gens)  # ran out of tokens
        _assert_fused_equal(model, gens, pad=0, eos=eos)


def test_row_ended_by_the_completion_check_when_pad_is_eos(loaded) -> None:
    """pad == EOS (as SmolLM2): a row done by the task's check is scored over its own tokens while others continue."""
    model, max_new = loaded.model, 10
    stop = loaded.tokenizer.decode([_stop_token(model, loaded.tokenizer, max_new)])
    tok = RenamedTokenizer(loaded.tokenizer, eos=1, pad=1)
    is_complete: Callable[[str], bool] = lambda text: stop in text
    gens = generate(model, tok, PROMPTS, max_new, BATCH, is_complete=is_complete, show_progress=False, stats=True)
    assert any(g.token_ids[-1] != 1 and stop in g.text and len(g.token_ids) < max_new for g in gens)  # no EOS added
    assert any(len(g.token_ids) == max_new for g in gens)
    _assert_fused_equal(model, gens, pad=1, eos=1)


def test_statistics_are_of_the_model_not_of_a_generation_config_penalty(loaded) -> None:
    """A repetition penalty changes the greedy choices, not the probabilities the answer is scored by."""
    model, base = loaded.model, loaded.model.get_base_model()
    plain = generate(model, loaded.tokenizer, PROMPTS, 10, BATCH, show_progress=False)
    base.generation_config.repetition_penalty = 3.0
    try:
        gens = generate(model, loaded.tokenizer, PROMPTS, 10, BATCH, show_progress=False, stats=True)
    finally:
        base.generation_config.repetition_penalty = 1.0
    assert [g.token_ids for g in gens] != [g.token_ids for g in plain]
    _assert_fused_equal(model, gens, pad=0, eos=1)


def test_greedy_uncertainty_scores_empty_answers_and_unexposed_heads_by_teacher_forcing(loaded, monkeypatch) -> None:
    """An answer trimmed to nothing is scored as EOS alone; without an LM head to hook, every answer is forced.

    Only `model.generate`'s answers can be empty: it cannot tell a generated pad token from padding and trims
    both (decode.py's loop keeps a token the model chose), so that path is taken here.
    """
    model = loaded.model
    monkeypatch.setattr(generation, "plain_greedy", lambda m: False)
    first = generate(model, loaded.tokenizer, PROMPTS, 1, BATCH, show_progress=False)[0].token_ids[0]
    tok = RenamedTokenizer(loaded.tokenizer, eos=1, pad=first)  # answers made of the pad token alone are trimmed to nothing
    gens = generate(model, tok, PROMPTS, 1, BATCH, show_progress=False, stats=True)
    empty = [i for i, g in enumerate(gens) if not g.token_ids]
    assert empty and len(empty) < len(PROMPTS) and all(gens[i].pe is None for i in empty)
    pe, me = _teacher_forced(model, gens, pad=first, eos=1)
    fused = greedy_uncertainty(model, tok, PROMPTS, first, 1, BATCH, show_progress=False)
    assert fused.pe.shape == fused.me.shape == (len(PROMPTS), 1)
    np.testing.assert_allclose(fused.pe[:, 0], pe, rtol=RTOL)
    np.testing.assert_allclose(fused.me[:, 0], me, rtol=RTOL)
    np.testing.assert_array_equal(fused.pe[empty, 0], pe[empty])  # the same teacher-forced numbers

    monkeypatch.setattr(generation, "decoder_and_head", lambda m: None)
    monkeypatch.setattr(decode, "decoder_and_head", lambda m: None)
    assert all(g.pe is None for g in generate(model, tok, PROMPTS, 4, BATCH, show_progress=False, stats=True))
    forced = greedy_uncertainty(model, tok, PROMPTS, first, 4, BATCH, show_progress=False)
    gens = generate(model, tok, PROMPTS, 4, BATCH, show_progress=False)
    pe, me = _teacher_forced(model, gens, pad=first, eos=1)
    np.testing.assert_array_equal(forced.pe[:, 0], pe)
    np.testing.assert_array_equal(forced.me[:, 0], me)


def test_statistics_leave_the_answers_and_the_model_as_they_were(loaded) -> None:
    head = loaded.model.get_base_model().get_output_embeddings()
    plain = generate(loaded.model, loaded.tokenizer, PROMPTS, 6, BATCH, show_progress=False)
    fused = generate(loaded.model, loaded.tokenizer, PROMPTS, 6, BATCH, show_progress=False, stats=True)
    assert [(g.token_ids, g.logprobs) for g in fused] == [(g.token_ids, g.logprobs) for g in plain]
    assert all(g.pe is None for g in plain) and not head._forward_hooks  # the hook is removed
