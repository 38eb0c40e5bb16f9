"""Per-question answer options (cloze-style OBQA): log-likelihoods by hand, both scoring paths, the task, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_helpers import tuned_tiny_model
from torch import nn

from star.config import EvalConfig, TaskConfig, build_config
from star.engine.evaluation import evaluate, option_choices
from star.engine.options import per_prompt_options
from star.engine.scoring import full_pair_logprobs, option_logprobs
from star.errors import ConfigError, DataError
from star.tasks import build_task

PAD = 0
PROMPTS = [[2, 40, 41, 42, 43], [2, 50], [2, 60, 61, 62, 63, 64, 65, 66]]
# Each prompt its own 3 options, of different lengths (single-token ones included): C = 3, not a shared list.
OPTIONS = [[[80, 81, 1], [90, 1], [110]],
           [[120, 121, 122, 123, 1], [130], [140, 141, 1]],
           [[150, 1], [160, 161, 162, 1], [170, 171, 1]]]


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir: Path) -> nn.Module:
    """The tiny model with LoRA (dropout 0.3) whose B is non-zero, so the adapter and its dropout matter."""
    return tuned_tiny_model(tiny_model_dir, seed=3, dropout=0.3).model


def by_hand(model: nn.Module, prompt: list[int], option: list[int]) -> float:
    """log p(option | prompt) from one unpadded full forward's logits (float64)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + option])).logits[0].double(), dim=-1)  # (T, V)
    return sum(float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(option))


def test_per_prompt_options_match_a_plain_full_forward(lora_model: nn.Module) -> None:
    got = option_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=2, show_progress=False)  # (n, C, 1)
    want = np.array([[by_hand(lora_model, p, o) for o in opts] for p, opts in zip(PROMPTS, OPTIONS)])  # (n, C)
    assert got.shape == (3, 3, 1)
    np.testing.assert_allclose(got[:, :, 0], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("passes", [1, 3])
def test_per_prompt_shared_prefix_equals_full_pairs(lora_model: nn.Module, passes: int) -> None:
    """One prompt forward + its own option rows == C full rows per prompt, MC-dropout passes included."""
    shared = option_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=6, passes=passes, seed=11,
                             show_progress=False)
    full = full_pair_logprobs(lora_model, PROMPTS, OPTIONS, PAD, batch_size=6, passes=passes, seed=11,
                              show_progress=False)
    assert shared.shape == full.shape == (3, 3, passes)
    np.testing.assert_allclose(shared, full, rtol=1e-5, atol=1e-4)


def test_a_shared_list_equals_the_same_list_given_per_prompt(lora_model: nn.Module) -> None:
    shared = [[80, 81, 1], [90, 1], [110]]
    one = option_logprobs(lora_model, PROMPTS, shared, PAD, batch_size=4, passes=2, seed=5, show_progress=False)
    each = option_logprobs(lora_model, PROMPTS, [shared] * 3, PAD, batch_size=4, passes=2, seed=5, show_progress=False)
    np.testing.assert_array_equal(one, each)


def test_per_prompt_option_lists_must_agree_in_number() -> None:
    assert per_prompt_options([[1], [2, 3]], 2) == [[[1], [2, 3]], [[1], [2, 3]]]  # shared: repeated
    with pytest.raises(ValueError, match="same number"):
        per_prompt_options([[[1], [2]], [[1]]], 2)
    with pytest.raises(ValueError, match="3 option lists for 2 prompts"):
        per_prompt_options([[[1]], [[2]], [[3]]], 2)


def test_acc_norm_divides_by_each_questions_own_option_lengths() -> None:
    logp = np.array([[-6.0, -4.0], [-6.0, -4.0]])  # (n=2, C=2): the same scores
    pred, pred_norm, _ = option_choices(logp, [[12, 2], [2, 12]])  # (n, C) characters
    assert pred.tolist() == [1, 1]
    assert pred_norm.tolist() == [0, 1]  # -0.5 > -2.0 per character; then -3.0 < -0.33


ROW = {"question": "Predators eat\nAnswerA: lions\nAnswerB: humans\nAnswerC: bunnies\nAnswerD: grass\n"
                   "The correct answer is ", "answer": "C"}


def _obqa_folder(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_obqa_cloze_prompt_options_and_target(tmp_path: Path) -> None:
    folder = _obqa_folder(tmp_path / "d", [ROW])
    cloze = build_task(TaskConfig(name="obqa", path=str(folder), option_style="cloze"))
    (ex,) = cloze.load("test")
    assert ex.question == ROW["question"] and ex.answer == "C"  # what people see and answer: unchanged
    assert cloze.prompt(ex.question) == "Predators eat"
    assert cloze.choice_texts_for(ex) == ["lions", "humans", "bunnies", "grass"]
    assert cloze.target_for(ex, "C") == "bunnies" and cloze.target_for(ex, "The correct answer is (a)") == "lions"
    assert cloze.choices == ("A", "B", "C", "D") and cloze.check_label("C") is None and cloze.extract("B.") == "B"
    assert cloze.choice_texts() is None and not cloze.answer_complete("C is for")
    with pytest.raises(ValueError, match="target_for"):
        cloze.target("C")  # would train on a letter: refused
    letter = build_task(TaskConfig(name="obqa", path=str(folder), option_style="letter"))
    assert letter.prompt(ex.question) == ex.question and letter.target_for(ex, "C") == "C"
    assert letter.choice_texts_for(ex) == ["A", "B", "C", "D"]


def test_obqa_cloze_refuses_a_question_without_option_lines(tmp_path: Path) -> None:
    folder = _obqa_folder(tmp_path / "d", [ROW, {"question": "Predators eat what? (A) lions (B) grass", "answer": "A"}])
    with pytest.raises(DataError, match=r"test.jsonl:2.*AnswerA") as err:
        build_task(TaskConfig(name="obqa", path=str(folder), option_style="cloze")).load("test")
    assert "option_style=letter" in err.value.hint
    assert len(build_task(TaskConfig(name="obqa", path=str(folder), option_style="letter")).load("test")) == 2


def test_cloze_with_generated_evaluation_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="option_style"):
        build_config({"task": {"name": "obqa", "path": "d", "option_style": "cloze"}}, overrides=["eval.mode=generate"])
    assert build_config({"task": {"name": "obqa", "path": "d"}}).task.option_style == "letter"  # the default
    build_config({"task": {"name": "obqa", "path": "d"}}, overrides=["eval.mode=generate"])


def test_evaluate_options_with_per_question_options_records_the_letter(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Each prediction is the letter of the argmax of the question's own option texts, scored by hand."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from star.engine.batching import encode_prompts, encode_responses

    words = ["cat", "river stone", "x", "blue sky at noon", "salt", "an old oak", "ice", "the moon", "wet sand"]
    rows = [{"question": f"Question {i}\n" + "".join(f"Answer{c}: {words[(i + j) % 9]}\n" for j, c in enumerate("ABCD"))
             + "The correct answer is ", "answer": "ABCD"[i % 4]} for i in range(6)]
    task = build_task(TaskConfig(name="obqa", path=str(_obqa_folder(tmp_path / "d", rows)), option_style="cloze"))
    test = task.load("test")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in test], 128)
    result = evaluate(model, tok, task, test, prompts, EvalConfig(batch_size=4, ece_bins=5), show_progress=False,
                      mode="options")
    texts = [task.choice_texts_for(e) for e in test]
    want = np.array([[by_hand(model, p, o) for o in encode_responses(tok, t, 256)]
                     for p, t in zip(prompts, texts)])  # (n, C)
    got = np.array([r["option_logprobs"] for r in result.predictions])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    letters = ["ABCD"[j] for j in want.argmax(1)]
    assert [r["prediction"] for r in result.predictions] == letters
    assert [r["correct"] for r in result.predictions] == [p == r["answer"] for p, r in zip(letters, rows)]
    norm = ["ABCD"[j] for j in (want / np.array([[len(x) for x in t] for t in texts])).argmax(1)]
    assert [r["prediction_norm"] for r in result.predictions] == norm
    assert result.accuracy == pytest.approx(np.mean([p == r["answer"] for p, r in zip(letters, rows)]))


OBQA_DATA = Path(__file__).parents[3] / "shared" / "datasets" / "OBQA"


@pytest.mark.skipif(not (OBQA_DATA / "test.jsonl").is_file(), reason="../shared/datasets/OBQA is not here")
def test_every_shared_obqa_question_splits_into_a_stem_and_four_options() -> None:
    task = build_task(TaskConfig(name="obqa", path=str(OBQA_DATA), pool_size=10**9, test_size=10**9,
                                 option_style="cloze"))
    examples = task.load("pool") + task.load("test")  # a question without option lines would stop the load
    assert len(examples) == 4957 + 500
    for ex in examples:
        stem, texts = task.prompt(ex.question), task.choice_texts_for(ex)
        assert len(texts) == 4 and stem and "Answer" not in stem[-8:] and all(t and "\n" not in t for t in texts)
        assert task.target_for(ex, ex.answer) == texts["ABCD".index(ex.answer)]
