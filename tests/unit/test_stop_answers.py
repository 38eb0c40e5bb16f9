"""The stop set's answers (engine.answers.model_answers): the extracted greedy answer with its PE, or the chosen
option with its PE over the options, each equal to what the scoring functions give for the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from star.al.uncertainty import option_uncertainty
from star.config import LoraSettings, ModelConfig, TaskConfig
from star.engine.answers import model_answers
from star.engine.batching import encode_prompts, encode_responses
from star.engine.generation import generate
from star.engine.modeling import LoadedModel, load_model
from star.engine.scoring import greedy_uncertainty, option_logprobs
from star.tasks import build_task


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4))


def _pad(loaded: LoadedModel) -> int:
    tok = loaded.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def test_generated_answers_are_extracted_with_their_greedy_pe(loaded: LoadedModel) -> None:
    task = build_task(TaskConfig(name="arithmetic", pool_size=6, test_size=2, max_steps=2))
    examples = task.load("pool")[:5]
    prompts = encode_prompts(loaded.tokenizer, [task.prompt(e.question) for e in examples], 96)
    preds, pe = model_answers(loaded.model, loaded.tokenizer, task, examples, prompts, _pad(loaded), mode="generate",
                              max_new_tokens=8, batch_size=4, max_answer_tokens=48, show_progress=False)
    gens = generate(loaded.model, loaded.tokenizer, prompts, 8, 4, is_complete=task.answer_complete,
                    show_progress=False)
    assert preds == [task.extract(g.text) for g in gens]
    want = greedy_uncertainty(loaded.model, loaded.tokenizer, prompts, _pad(loaded), 8, 4, task.answer_complete,
                              show_progress=False).pe[:, 0]
    np.testing.assert_allclose(pe, want, rtol=1e-9)
    assert pe.shape == (5,) and np.all(pe >= 0)


def test_option_answers_are_the_argmax_option_with_its_renormalised_pe(loaded: LoadedModel, tmp_path: Path) -> None:
    rows = [{"question": f"Is {i} even?", "answer": "yes" if i % 2 == 0 else "no"} for i in range(8)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = build_task(TaskConfig(name="jsonl", path=str(tmp_path / "d.jsonl"), pool_size=6, test_size=2,
                                 answer_type="choice", choices=["yes", "no"]))
    examples = task.load("pool")[:5]
    prompts = encode_prompts(loaded.tokenizer, [task.prompt(e.question) for e in examples], 96)
    preds, pe = model_answers(loaded.model, loaded.tokenizer, task, examples, prompts, _pad(loaded), mode="options",
                              max_new_tokens=8, batch_size=4, max_answer_tokens=48, show_progress=False)
    options = encode_responses(loaded.tokenizer, task.choice_texts() or [], 48)
    logp = option_logprobs(loaded.model, prompts, options, _pad(loaded), 4, show_progress=False)  # (n, C, 1)
    assert preds == [task.choices[int(c)] for c in logp[:, :, 0].argmax(axis=1)]
    np.testing.assert_allclose(pe, option_uncertainty(logp).pe[:, 0], rtol=1e-9, atol=1e-12)
    assert np.all((pe >= 0) & (pe <= np.log(2) + 1e-12))  # PE of the chosen of 2 options
