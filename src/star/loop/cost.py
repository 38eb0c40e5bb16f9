"""Annotation cost of a run (al.cost): labels' actual cost, candidates' estimates, and the budget's cut.

The lengths are measured here (answers, the task's targets, the model's tokenizer); the arithmetic
is star.al.cost. Actual cost is read from the committed labels, so a resumed run records the same
numbers. Estimates never read the pool's gold answers: the model's own greedy answers where the
scoring pass produced them, the answer options' lengths on closed tasks, else the mean actual cost of
the labels so far (round 0: of the test set's answers, labelled data the run evaluates on anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from star.al.cost import budget_prefix, estimated_costs, label_costs
from star.errors import RunStateError
from star.loop.experiment import Experiment
from star.store.labels import Label
from star.tasks import Example


def _tokens(exp: Experiment, text: str) -> int:
    """Tokens of `text` by the model's tokenizer (no special tokens: what a person or LLM writes)."""
    return len(exp.model.tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_length(exp: Experiment, example: Example, answer: str) -> float:
    """A label's length in al.cost.unit: characters of `answer` as given, or tokens of its training target."""
    if exp.config.al.cost.unit == "tokens":
        return float(_tokens(exp, exp.task.target_for(example, answer)))
    return float(len(answer))


def labels_cost(exp: Experiment, labels: Sequence[Label]) -> float:
    """The actual cost of `labels` in al.cost.unit (1 each for "label")."""
    unit = exp.config.al.cost.unit
    if unit == "label":
        return float(len(labels))
    by_id = {e.id: e for e in exp.pool}
    return float(label_costs(unit, [answer_length(exp, by_id[lab.example_id], lab.answer) for lab in labels]).sum())


def cost_metrics(exp: Experiment, t: int) -> dict[str, Any]:
    """metrics.json's "cost" of round t: the round's labels, all labels up to it, and the unit."""
    return {"round": labels_cost(exp, exp.store.in_round(t)), "total": labels_cost(exp, exp.store.up_to(t)),
            "unit": exp.config.al.cost.unit}


def _mean_cost(exp: Experiment, t: int) -> float:
    """The mean actual cost of a label from rounds before t; round 0: of the test set's answers."""
    labels = exp.store.up_to(t - 1) if t > 0 else []
    if labels:
        return labels_cost(exp, labels) / len(labels)
    lengths = [answer_length(exp, e, e.answer) for e in exp.test if e.answer is not None]
    return float(np.mean(lengths)) if lengths else 1.0


def _option_lengths(exp: Experiment, idx: Sequence[int]) -> np.ndarray:
    """(n,) each candidate's mean length of its answer options: the answers as given (chars) or their targets."""
    if exp.config.al.cost.unit == "chars":
        mean = float(np.mean([len(c) for c in exp.task.choices or ()]))
        return np.full(len(idx), mean)
    return np.array([np.mean([_tokens(exp, o) for o in exp.task.choice_texts_for(exp.pool[i]) or ()]) for i in idx])


def estimate_costs(exp: Experiment, t: int, idx: Sequence[int], answers: Sequence[str] | None) -> np.ndarray:
    """(n,) estimated cost of labelling pool examples `idx` in round t (`answers`: the model's greedy answers to
    them from the scoring pass, if it generated any); see the module's docstring for the fallbacks."""
    unit = exp.config.al.cost.unit
    if unit == "label":
        return estimated_costs(unit, len(idx), None, 1.0)
    if answers is not None:
        lengths = np.array([len(a) if unit == "chars" else _tokens(exp, a) for a in answers], dtype=np.float64)
        return estimated_costs(unit, len(idx), lengths, 1.0)
    if exp.config.al.response == "options" and exp.task.choices:
        return estimated_costs(unit, len(idx), _option_lengths(exp, idx), 1.0)
    return estimated_costs(unit, len(idx), None, _mean_cost(exp, t))


def remaining_budget(exp: Experiment, t: int) -> float | None:
    """What is left of al.stop.budget before round t (actual cost of earlier rounds' labels), or None when no
    enforced budget rule applies."""
    stop = exp.config.al.stop
    if "budget" not in stop.rules or not stop.enforce or stop.budget is None:
        return None
    return stop.budget - (labels_cost(exp, exp.store.up_to(t - 1)) if t > 0 else 0.0)


def within_budget(exp: Experiment, t: int, chosen: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """The prefix of `chosen` (indices, in rank order) whose estimated cost fits the remaining budget (at least
    one while any remains); all of `chosen` without an enforced budget."""
    remaining = remaining_budget(exp, t)
    if remaining is None:
        return chosen
    if remaining <= 0:  # the budget rule holds after the round that spent it, so the run stops before this
        raise RunStateError(f"round {t} has no budget left: al.stop.budget={exp.config.al.stop.budget} is spent",
                            hint="the run is over; raise the budget in a new run to label more")
    return chosen[:budget_prefix(estimates[chosen], remaining)]
