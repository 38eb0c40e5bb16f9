"""Evaluation after a round: greedy answers on the test split, accuracy and calibration (ECE).

Confidence is the model's probability of its own final answer: the product of the
probabilities of the tokens that spell the extracted answer. When no answer can be
extracted the prediction is wrong, and the confidence is the geometric-mean token
probability of the whole response.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from star.al.calibration import expected_calibration_error, reliability_bins
from star.config import EvalConfig
from star.engine.generation import Generation, generate, token_char_ends
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


def answer_confidence(tokenizer, task: Task, gen: Generation) -> float:  # noqa: ANN001
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


def evaluate(model: nn.Module, tokenizer, task: Task, examples: Sequence[Example], prompts: Sequence[list[int]],  # noqa: ANN001
             config: EvalConfig, show_progress: bool = True, *, dist: Dist = Dist()) -> EvalResult:
    """Accuracy (task's answer extraction) and ECE of the model on `examples` (generation shared out over `dist`)."""
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
    conf_arr, corr_arr = np.asarray(confidence), np.asarray(correct, dtype=float)
    return EvalResult(
        accuracy=float(corr_arr.mean()) if len(corr_arr) else 0.0,
        ece=expected_calibration_error(conf_arr, corr_arr, config.ece_bins),
        mean_confidence=float(conf_arr.mean()) if len(conf_arr) else 0.0,
        n=len(examples),
        reliability=reliability_bins(conf_arr, corr_arr, config.ece_bins),
        predictions=predictions,
    )
