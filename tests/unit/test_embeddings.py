"""Prompt embeddings: every capture path equals the direct computation (the base model's hidden_states[-1],
masked mean over the prompt's tokens), whatever the batch and its padding; nothing is hooked unless asked;
the run's cache (store/embeddings.py) keeps each row once, writes only a round's new rows, survives damage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_helpers import tuned_tiny_model
from torch import nn

from star.engine import embeddings as emb
from star.engine import scoring
from star.engine.adapter import adapter_disabled
from star.engine.scoring import greedy_uncertainty, prompt_embeddings, score_options, score_pairs
from star.store.embeddings import EmbeddingCache, read_embedding_file
from star.store.runs import RunDir

PAD = 0
# Prompts of different lengths, not sorted: each batch pads them differently (left in generation, right elsewhere).
PROMPTS = [[2] + list(range(40 + 7 * i, 40 + 7 * i + k)) for i, k in enumerate((3, 9, 1, 6, 12, 4, 2, 8))]
RESPONSES = [[5 + i % 3] * (1 + (5 * i) % 4) + [1] for i in range(len(PROMPTS))]  # 2..5 tokens: widths differ
OPTIONS = [[80, 81, 1], [90, 1], [100, 101, 102, 1], [110]]
ATOL = 1e-5  # fp32: padded batches and a single unpadded row sum in a different order
BATCHES = [1, 3, 8]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    """The tiny model with LoRA whose B is non-zero: the adapter changes the hidden states."""
    return tuned_tiny_model(tiny_model_dir, seed=7, dropout=0.3)


def direct(model: nn.Module, prompts: list[list[int]]) -> np.ndarray:
    """(n, d): each prompt alone (no padding), the mean of hidden_states[-1] over its tokens."""
    with torch.no_grad():
        return np.stack([model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0].mean(0)
                         .numpy() for p in prompts])


@pytest.fixture(scope="module")
def want(loaded) -> np.ndarray:
    """The base model's embeddings of PROMPTS (adapter off)."""
    with adapter_disabled(loaded.model):
        base = direct(loaded.model, PROMPTS)
    assert np.abs(direct(loaded.model, PROMPTS) - base).max() > 1e-2  # the adapter matters: "base" is a real claim
    return base


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def _check(got: np.ndarray | None, want: np.ndarray) -> None:
    assert got is not None and got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("batch_size", BATCHES)
def test_generation_prefill_left_padded(loaded, want, batch_size: int) -> None:
    hooks = _hooks(loaded.model)
    with adapter_disabled(loaded.model):
        u = greedy_uncertainty(loaded.model, loaded.tokenizer, PROMPTS, PAD, 3, batch_size, show_progress=False,
                               embed=True)
    _check(u.embeddings, want)
    assert _hooks(loaded.model) == hooks  # the capture's hook is gone


@pytest.mark.parametrize("batch_size", BATCHES)
def test_teacher_forced_pairs_prompt_positions_only(loaded, want, batch_size: int) -> None:
    with adapter_disabled(loaded.model):
        u = score_pairs(loaded.model, PROMPTS, RESPONSES, PAD, batch_size, show_progress=False, embed=True)
    _check(u.embeddings, want)


@pytest.mark.parametrize("batch_size", BATCHES)
def test_options_shared_prefix_prompt_pass(loaded, want, batch_size: int) -> None:
    with adapter_disabled(loaded.model):
        u = score_options(loaded.model, PROMPTS, OPTIONS, PAD, batch_size, show_progress=False, embed=True)
    _check(u.embeddings, want)


def test_options_full_pair_path(loaded, want, monkeypatch) -> None:
    """Sharded runs and models without a decoder score full (prompt + option) rows: one embedding per prompt."""
    monkeypatch.setattr(scoring, "supports_shared_prefix", lambda model: False)
    with adapter_disabled(loaded.model):
        u = score_options(loaded.model, PROMPTS, OPTIONS, PAD, 6, show_progress=False, embed=True)
    _check(u.embeddings, want)


@pytest.mark.parametrize("batch_size", BATCHES)
def test_prompt_only_forward(loaded, want, batch_size: int) -> None:
    with adapter_disabled(loaded.model):
        _check(prompt_embeddings(loaded.model, PROMPTS, PAD, batch_size, show_progress=False), want)


def test_prompt_only_forward_without_an_exposed_decoder(loaded, want, monkeypatch) -> None:
    monkeypatch.setattr(scoring, "decoder_and_head", lambda model: None)
    with adapter_disabled(loaded.model):
        _check(prompt_embeddings(loaded.model, PROMPTS, PAD, 3, show_progress=False), want)


def test_nothing_is_captured_unless_asked(loaded, monkeypatch) -> None:
    """A plain scoring pass hooks nothing and averages nothing: the capture costs a run without it no work."""
    def refuse(*args, **kwargs):
        raise AssertionError("an embedding was computed without being asked for")

    monkeypatch.setattr(emb, "masked_mean", refuse)
    model, tok = loaded.model, loaded.tokenizer
    before = _hooks(model)
    assert greedy_uncertainty(model, tok, PROMPTS, PAD, 3, 3, show_progress=False).embeddings is None
    assert score_pairs(model, PROMPTS, RESPONSES, PAD, 3, show_progress=False).embeddings is None
    assert score_options(model, PROMPTS, OPTIONS, PAD, 3, show_progress=False).embeddings is None
    assert _hooks(model) == before


# --- the run's cache ---------------------------------------------------------------------------

def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def test_cache_keeps_each_row_once_and_writes_only_new_rows(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cache = EmbeddingCache.read(run)
    first = _rows(3, 0)
    cache.add(["a", "b", "c"], first)
    cache.flush(0)
    written = run.embeddings_path(0).read_bytes()
    cache.add(["c", "d"], _rows(2, 1))  # "c" is known: it keeps its first row
    cache.flush(1)
    assert run.embeddings_path(0).read_bytes() == written  # round 0's file is not rewritten
    assert read_embedding_file(run.embeddings_path(1))[0] == ["d"]
    cache.flush(2)
    assert not run.embeddings_path(2).exists()  # nothing new, nothing written
    again = EmbeddingCache.read(run)
    np.testing.assert_array_equal(again.get(["a", "b", "c"]), first)
    np.testing.assert_array_equal(again.get(["d"]), _rows(2, 1)[1:])
    assert again.missing(["d", "e", "a"]) == ["e"]


def test_a_resumed_round_adds_to_its_own_file(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    cache = EmbeddingCache.read(run)
    cache.add(["a"], _rows(1, 0))
    cache.flush(1)
    resumed = EmbeddingCache.read(run)
    resumed.add(["a", "b"], _rows(2, 5))
    resumed.flush(1)
    ids, rows = read_embedding_file(run.embeddings_path(1))
    assert ids == ["a", "b"]
    np.testing.assert_array_equal(rows, np.concatenate([_rows(1, 0), _rows(2, 5)[1:]]))


def test_other_processes_do_not_write(tmp_path: Path) -> None:
    cache = EmbeddingCache.read(RunDir(tmp_path))
    cache.add(["a"], _rows(1, 0))
    cache.flush(0, write=False)
    assert not RunDir(tmp_path).embeddings_path(0).exists() and "a" in cache


def test_a_damaged_file_is_skipped_and_its_rows_count_as_missing(tmp_path: Path, caplog) -> None:
    run = RunDir(tmp_path)
    cache = EmbeddingCache.read(run)
    cache.add(["a"], _rows(1, 0))
    cache.flush(0)
    cache.add(["b"], _rows(1, 1))
    cache.flush(1)
    data = bytearray(run.embeddings_path(1).read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: the zip's CRC no longer matches
    run.embeddings_path(1).write_bytes(bytes(data))
    again = EmbeddingCache.read(run)
    assert again.missing(["a", "b"]) == ["b"]
    assert "embeddings.npz cannot be read" in caplog.text
