"""Evaluation after a round on the test split: accuracy and calibration (ECE), in one of two modes.

generate: greedy answers, graded by the task's answer extraction. Confidence is the model's
probability of its own final answer: the product of the probabilities of the tokens that spell
the extracted answer. When no answer can be extracted the prediction is wrong, and the
confidence is the geometric-mean token probability of the whole response.

options (closed tasks, as lm-evaluation-harness scores OBQA, ARC and BoolQ): the log-likelihood
of every answer option's target after the prompt (a shared option set, or each question's own
option texts: cloze-style OBQA); the prediction is the argmax (`accuracy`), or
the argmax of log-likelihood / the option's length in characters (`accuracy_norm`, lm-eval's
acc_norm). Confidence is the predicted option's probability renormalised over the options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from star.al.calibration import expected_calibration_error, reliability_bins
from star.config import EvalConfig
from star.engine.batching import encode_responses
from star.engine.generation import Generation, generate, token_char_ends
from star.engine.scoring import option_logprobs
from star.parallel.distributed import Dist
from star.tasks.base import Example, Task


@dataclass
class EvalResult:
    """Test-set metrics of one model, and its per-example predictions."""

    accuracy: float
    ece: float
    mean_confidence: float
    n: int
    reliability: list[dict[str, float]]
    predictions: list[dict] = field(default_factory=list)
    accuracy_norm: float | None = None  # options mode: argmax of log-likelihood per character
    mode: str = "generate"


def answer_confidence(tokenizer, task: Task, gen: Generation) -> float:
    """P(answer tokens) for an extracted answer, else the response's geometric-mean token probability."""
    if not gen.logprobs:
        return 0.0
    span = task.answer_span(gen.text)
    if span is not None:
        ends = token_char_ends(tokenizer, gen.token_ids)
        starts = [0] + ends[:-1]
        covering = [lp for s, e, lp in zip(starts, ends, gen.logprobs) if e > span[0] and s < span[1]]
        if covering:
            return math.exp(sum(covering))
    return math.exp(sum(gen.logprobs) / len(gen.logprobs))


def _result(correct: Sequence[bool], confidence: Sequence[float], bins: int, predictions: list[dict],
            **extra: object) -> EvalResult:
    """Accuracy, ECE, mean confidence and reliability bins of per-example correctness and confidence."""
    conf_arr, corr_arr = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    return EvalResult(
        accuracy=float(corr_arr.mean()) if len(corr_arr) else 0.0,
        ece=expected_calibration_error(conf_arr, corr_arr, bins),
        mean_confidence=float(conf_arr.mean()) if len(conf_arr) else 0.0,
        n=len(predictions),
        reliability=reliability_bins(conf_arr, corr_arr, bins),
        predictions=predictions,
        **extra,
    )


def option_choices(logp: np.ndarray,
                   char_lengths: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From log-likelihoods (n, C): the argmax option (n,), the argmax of logp / characters (n,) (acc_norm),
    and the argmax option's probability renormalised over the C options (n,) (its confidence).

    `char_lengths`: each option's length in characters, (C,) shared by all examples or (n, C) per example."""
    pred = logp.argmax(axis=1)  # (n,)
    pred_norm = (logp / np.maximum(np.asarray(char_lengths, dtype=float), 1.0)).argmax(axis=1)  # (n,)
    shifted = logp - logp.max(axis=1, keepdims=True)  # (n, C)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)  # (n, C)
    return pred, pred_norm, probs[np.arange(len(pred)), pred]


def example_options(task: Task, examples: Sequence[Example]) -> list[list[str]]:
    """Each example's C option texts (`task.choice_texts_for`), one per entry of `task.choices`."""
    texts = [task.choice_texts_for(ex) for ex in examples]
    if not task.choices or any(not t or len(t) != len(task.choices) for t in texts):
        raise ValueError(f"task {task.name!r} has no answer options to score; evaluate with eval.mode=generate")
    return texts  # (n, C)


def evaluate_options(model: nn.Module, tokenizer, task: Task, examples: Sequence[Example],
                     prompts: Sequence[list[int]], config: EvalConfig, show_progress: bool = True, *,
                     max_answer_tokens: int = 256, dist: Dist = Dist()) -> EvalResult:
    """Accuracy (argmax option; per character: accuracy_norm) and ECE from each answer option's log-likelihood.

    The options are each example's `choice_texts_for` targets (the same for every example unless the task
    has per-question option texts), tokenised as training targets are (EOS included); predictions are
    recorded as the task's `choices` (e.g. the letter of the chosen OBQA option).
    """
    texts, choices = example_options(task, examples), task.choices
    options = [encode_responses(tokenizer, t, max_answer_tokens) for t in texts]  # (n, C) lists of ids
    logp = option_logprobs(model, prompts, options, _pad_id(tokenizer), config.batch_size, desc="evaluate (options)",
                           show_progress=show_progress, dist=dist)[:, :, 0]  # (n, C)
    pred, pred_norm, confidence = option_choices(logp, [[len(x) for x in t] for t in texts])
    predictions, correct_norm = [], []
    for j, ex in enumerate(examples):
        ok, ok_norm = (task.is_correct(choices[int(p[j])], ex.answer or "") for p in (pred, pred_norm))
        correct_norm.append(ok_norm)
        predictions.append({"id": ex.id, "prediction": choices[int(pred[j])], "correct": ok,
                            "confidence": float(confidence[j]), "prediction_norm": choices[int(pred_norm[j])],
                            "correct_norm": ok_norm, "option_logprobs": [float(x) for x in logp[j]]})
    return _result([p["correct"] for p in predictions], confidence, config.ece_bins, predictions,
                   accuracy_norm=float(np.mean(correct_norm)) if correct_norm else 0.0, mode="options")


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def evaluate(model: nn.Module, tokenizer, task: Task, examples: Sequence[Example], prompts: Sequence[list[int]],
             config: EvalConfig, show_progress: bool = True, *, mode: str = "generate", max_answer_tokens: int = 256,
             dist: Dist = Dist()) -> EvalResult:
    """Accuracy and ECE of the model on `examples`, work shared out over `dist`: mode `options` scores the task's
    answer options (`evaluate_options`), `generate` grades greedy answers by the task's answer extraction."""
    if mode == "options":
        return evaluate_options(model, tokenizer, task, examples, prompts, config, show_progress,
                                max_answer_tokens=max_answer_tokens, dist=dist)
    gens = generate(model, tokenizer, prompts, config.max_new_tokens, config.batch_size,
                    is_complete=task.answer_complete, desc="evaluate", show_progress=show_progress, dist=dist)
    correct, confidence, predictions = [], [], []
    for ex, gen in zip(examples, gens):
        pred = task.extract(gen.text)
        ok = task.is_correct(pred, ex.answer or "")
        conf = answer_confidence(tokenizer, task, gen)
        correct.append(ok)
        confidence.append(conf)
        predictions.append({"id": ex.id, "prediction": pred, "correct": ok, "confidence": conf, "output": gen.text})
    return _result(correct, confidence, config.ece_bins, predictions)
