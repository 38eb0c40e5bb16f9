"""Option-likelihood evaluation (eval.mode=options): acc vs acc_norm, confidence, metrics, and the config rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from star.config import EvalConfig, TaskConfig, build_config, dump_config, has_options, load_stored_config
from star.engine.evaluation import evaluate, option_choices
from star.errors import ConfigError
from star.tasks import build_task


def test_acc_and_acc_norm_differ_where_length_matters() -> None:
    """Option 1 is 10 characters long: less likely in total (-4 vs -3) but more likely per character."""
    logp = np.array([[-3.0, -4.0], [-5.0, -1.0]])  # (n=2, C=2)
    pred, pred_norm, conf = option_choices(logp, [1, 10])
    assert pred.tolist() == [0, 1] and pred_norm.tolist() == [1, 1]
    assert conf[0] == pytest.approx(1 / (1 + math.exp(-1.0)))  # e^-3 / (e^-3 + e^-4)
    assert conf[1] == pytest.approx(1 / (1 + math.exp(-4.0)))


def _choice_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"question": f"Is {i} even?", "answer": "yes" if i % 2 == 0 else "no"} for i in range(7)]
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_evaluate_options_against_a_plain_forward(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Each prediction is the argmax of log p(target + EOS | prompt) computed by hand; metrics follow from them."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from star.engine.batching import encode_prompts, encode_responses

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    task = build_task(TaskConfig(name="jsonl", path=str(_choice_folder(tmp_path / "d")), answer_type="choice",
                                 choices=["yes", "no"]))
    test = task.load("test")
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in test], 128)
    options = encode_responses(tok, task.choice_texts(), 256)
    result = evaluate(model, tok, task, test, prompts, EvalConfig(batch_size=3, ece_bins=5), show_progress=False,
                      mode="options")
    with torch.no_grad():
        want = np.array([[float(torch.log_softmax(model(torch.tensor([p + o])).logits[0].double(), -1)
                                [len(p) - 1 + torch.arange(len(o)), torch.tensor(o)].sum()) for o in options]
                         for p in prompts])  # (n, C)
    got = np.array([r["option_logprobs"] for r in result.predictions])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    gold = [task.gold_answer(e.answer) for e in test]
    assert [r["prediction"] for r in result.predictions] == [task.choices[j] for j in want.argmax(1)]
    assert result.accuracy == pytest.approx(np.mean([r["prediction"] == g for r, g in zip(result.predictions, gold)]))
    norm = want / np.array([len(t) for t in task.choice_texts()])
    assert result.accuracy_norm == pytest.approx(np.mean([task.choices[j] == g for j, g in zip(norm.argmax(1), gold)]))
    probs = np.exp(want) / np.exp(want).sum(1, keepdims=True)
    np.testing.assert_allclose([r["confidence"] for r in result.predictions], probs.max(1), rtol=1e-5)
    assert result.mode == "options" and result.n == len(test) and len(result.reliability) == 5
    assert {"id", "prediction", "correct", "confidence", "option_logprobs"} <= set(result.predictions[0])


@pytest.mark.parametrize("task", [
    {"name": "arithmetic"}, {"name": "gsm8k"}, {"name": "boolq"}, {"name": "obqa"},
    {"name": "jsonl", "answer_type": "choice", "choices": ["yes", "no"]},
    {"name": "jsonl", "answer_type": "number"}, {"name": "jsonl", "answer_type": "text"},
])
def test_auto_mode_follows_whether_the_task_has_options(task: dict, tmp_path: Path) -> None:
    cfg = TaskConfig(**task, path=None if task["name"] == "arithmetic" else str(tmp_path))
    assert has_options(cfg) == (build_task(cfg).choices is not None)  # config's rule == the tasks' own
    expected = "options" if has_options(cfg) else "generate"
    assert EvalConfig().resolved_mode(cfg) == expected
    assert EvalConfig(mode="generate").resolved_mode(cfg) == "generate"


@pytest.mark.parametrize("task, named", [
    ({"name": "arithmetic"}, "task.name='arithmetic'"),
    ({"name": "jsonl", "path": "d", "answer_type": "number"}, "answer_type='number'"),
])
def test_options_mode_on_a_task_without_options_is_one_clear_error(task: dict, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({"task": task}, overrides=["eval.mode=options"])
    text = str(err.value)
    assert "1 problem(s)" in text and "eval.mode=options" in text and named in text
    assert "eval.mode=generate" in text  # the fix


def test_unknown_eval_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match="eval.mode"):
        build_config(overrides=["eval.mode=likelihood"])


def test_a_stored_config_without_eval_mode_keeps_evaluating_by_generation(tmp_path: Path) -> None:
    stored = yaml.safe_load(dump_config(build_config({"task": {"name": "obqa", "path": "d"}})))
    assert stored["eval"]["mode"] == "auto"
    del stored["eval"]["mode"]  # written before eval.mode existed: that run generated its answers
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(stored))
    cfg = load_stored_config(path)
    assert cfg.eval.mode == "generate" and cfg.eval.resolved_mode(cfg.task) == "generate"
    stored["eval"]["mode"] = "auto"
    path.write_text(yaml.safe_dump(stored))
    cfg = load_stored_config(path)
    assert cfg.eval.resolved_mode(cfg.task) == "options"  # a recorded value always wins
