"""The compacting greedy loop (engine/decode.py) gives `model.generate`'s answers and log-probabilities.

The tiny random model (fp32, LoRA B non-zero), prompts of different lengths with and without a shared prefix,
rows ending at EOS, at the task's completion check and at max_new_tokens, with finished rows dropped from
the batch at once or never; and the cases where `model.generate` must be used instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_helpers import RenamedTokenizer, tuned_tiny_model

from star.engine import decode
from star.engine.adapter import adapter_disabled, mc_dropout
from star.engine.decode import common_prefix, plain_greedy
from star.engine.generation import _generate_hf, generate_batch, left_pad

SHARED = list(range(60, 72))  # 12 tokens: longer than MIN_SHARED_PREFIX
OWN = [list(range(80 + 5 * i, 80 + 5 * i + k)) for i, k in enumerate((3, 9, 1, 6, 12, 4))]
MAX_NEW = 12


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return tuned_tiny_model(tiny_model_dir, seed=7, dropout=0.3)


def _reference(model, tok, prompts, is_complete=None):
    ids, mask = left_pad(prompts, tok.pad_token_id)
    return _generate_hf(model, tok, ids, mask, tok.pad_token_id, MAX_NEW, is_complete, False, True, False)


def _mid_answer_token(model, tok, prompts) -> int:
    """A token, printable on its own, that some greedy answers hold before their end and others never hold."""
    answers = [g.token_ids for g in generate_batch(model, RenamedTokenizer(tok, eos=-1, pad=0), prompts, MAX_NEW)]
    for t in sorted({t for a in answers for t in a[1:-2]}):
        if tok.decode([t]).isprintable() and tok.decode([t]).strip() and any(t not in a for a in answers):
            return t
    raise AssertionError("no token ends some answers and not others")


def _assert_same(got, want) -> None:
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    assert [g.text for g in got] == [w.text for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.logprobs, w.logprobs, rtol=0, atol=2e-5)
        if w.token_ids:
            np.testing.assert_allclose([g.pe, g.me], [w.pe, w.me], rtol=2e-5)


@pytest.mark.parametrize("compact", [0, 10**6], ids=["rows-kept", "rows-dropped"])
@pytest.mark.parametrize("prefix", [[], SHARED], ids=["no-shared-prefix", "shared-prefix"])
@pytest.mark.parametrize("base", [False, True], ids=["tuned", "adapter-off"])
def test_answers_equal_generate(loaded, monkeypatch, compact: int, prefix: list[int], base: bool) -> None:
    monkeypatch.setattr(decode, "COMPACT_FRACTION", compact)
    prompts = [prefix + p for p in OWN]
    with adapter_disabled(loaded.model) if base else torch.no_grad():
        eos = _mid_answer_token(loaded.model, loaded.tokenizer, prompts)
        tok = RenamedTokenizer(loaded.tokenizer, eos=eos, pad=0)
        want = _reference(loaded.model, tok, prompts)
        got = generate_batch(loaded.model, tok, prompts, MAX_NEW, stats=True)
    lengths = {len(w.token_ids) for w in want}
    assert len(lengths) > 1 and MAX_NEW in lengths and any(w.token_ids[-1] == eos for w in want)
    _assert_same(got, want)


def _first_widths(loaded) -> list[tuple[int, int]]:
    """The (rows, tokens) of the decoder's first two forwards in a generation of the shared-prefix prompts."""
    widths = []
    decoder = loaded.model.get_base_model().get_decoder()
    handle = decoder.register_forward_pre_hook(lambda m, a, k: widths.append(tuple(k["input_ids"].shape)), with_kwargs=True)
    try:
        generate_batch(loaded.model, loaded.tokenizer, [SHARED + p for p in OWN], 2)
    finally:
        handle.remove()
    return widths[:2]


def test_shared_prefix_is_run_once(loaded) -> None:
    """The prefix goes through the decoder once, as one row; the rest of each prompt after it."""
    assert _first_widths(loaded) == [(1, len(SHARED)), (len(OWN), max(len(p) for p in OWN))]


def test_no_shared_prefix_while_dropout_draws(loaded) -> None:
    """With LoRA's dropout on (MC dropout), each row needs its own draw over its whole prompt."""
    with torch.random.fork_rng(), mc_dropout(loaded.model, enabled=True):  # plain dropout draws from the global RNG
        assert _first_widths(loaded)[0] == (len(OWN), len(SHARED) + max(len(p) for p in OWN))


def test_completion_check_ends_a_row_without_an_eos_when_pad_is_eos(loaded) -> None:
    """pad == EOS (as SmolLM2): a row the task's check ends is its tokens up to then, in both paths, whatever
    its batch-mates do (generate pads it with EOS while they go on; that EOS is not the model's)."""
    prompts = [SHARED + p for p in OWN]
    stop = loaded.tokenizer.decode([_mid_answer_token(loaded.model, loaded.tokenizer, prompts)])
    is_complete = lambda text: stop in text
    tok = RenamedTokenizer(loaded.tokenizer, eos=1, pad=1)
    want = _reference(loaded.model, tok, prompts, is_complete)
    got = generate_batch(loaded.model, tok, prompts, MAX_NEW, is_complete=is_complete, stats=True)
    ended = [g for g in want if stop in g.text]
    assert ended and all(1 not in g.token_ids for g in ended)
    assert max(len(g.token_ids) for g in want) > min(len(g.token_ids) for g in ended)  # others went on after it
    _assert_same(got, want)


def test_generation_config_that_changes_greedy_choices_uses_generate(loaded) -> None:
    base = loaded.model.get_base_model()
    assert plain_greedy(loaded.model)
    base.generation_config.repetition_penalty = 3.0
    try:
        assert not plain_greedy(loaded.model)
        prompts = [SHARED + p for p in OWN]
        ids, mask = left_pad(prompts, 0)
        want = _generate_hf(loaded.model, loaded.tokenizer, ids, mask, 0, MAX_NEW, None, False, False, False)
        got = generate_batch(loaded.model, loaded.tokenizer, prompts, MAX_NEW)
    finally:
        base.generation_config.repetition_penalty = 1.0
    assert [g.token_ids for g in got] == [w.token_ids for w in want]


@pytest.mark.parametrize("prompts, want", [
    ([[1, 2, 3], [1, 2, 4]], 2),
    ([[1, 2, 3], [1, 2]], 1),  # the shorter prompt keeps a token of its own
    ([[5, 2], [1, 2]], 0),
    ([[1, 2, 3]], 2),
])
def test_common_prefix(prompts: list[list[int]], want: int) -> None:
    assert common_prefix(prompts) == want
