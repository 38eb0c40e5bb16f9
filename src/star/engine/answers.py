"""The model's own answers on unlabelled examples, with the uncertainty of each (the stopping rules' stop set).

generate: the greedy answer, extracted by the task (None when there is none), and its PE (-sum log p of the
answer's tokens, from the generation pass itself: `greedy_answers`). options: the option with the highest
log-likelihood (as the options evaluation), recorded as the task's choice, and its PE over the options
(-log of its probability renormalised over the C options). Deterministic: eval mode, no dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from star.engine.batching import encode_responses
from star.engine.evaluation import example_options, option_choices
from star.engine.scoring import greedy_answers, option_logprobs
from star.parallel.distributed import Dist
from star.tasks.base import Example, Task


def model_answers(model: nn.Module, tokenizer, task: Task, examples: Sequence[Example],
                  prompts: Sequence[list[int]], pad_id: int, *, mode: str, max_new_tokens: int, batch_size: int,
                  max_answer_tokens: int, show_progress: bool = True,
                  dist: Dist | None = None) -> tuple[list[str | None], np.ndarray]:
    """Each example's answer (None: none extracted) and its PE (n,), by `mode` ("generate" or "options")."""
    dist = dist or Dist()
    if mode == "options":
        texts = example_options(task, examples)  # (n, C) option texts
        options = [encode_responses(tokenizer, t, max_answer_tokens) for t in texts]
        logp = option_logprobs(model, prompts, options, pad_id, batch_size, desc="stop set (options)",
                               show_progress=show_progress, dist=dist)[:, :, 0]  # (n, C)
        pred, _, prob = option_choices(logp, [[len(x) for x in t] for t in texts])  # (n,) each
        choices = task.choices or ()
        return [choices[int(p)] for p in pred], -np.log(np.maximum(prob, np.finfo(float).tiny))
    gens, u = greedy_answers(model, tokenizer, prompts, pad_id, max_new_tokens, batch_size, task.answer_complete,
                             desc="stop set", show_progress=show_progress, dist=dist)
    return [task.extract(g.text) for g in gens], u.pe[:, 0]
