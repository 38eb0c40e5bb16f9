"""Stopping rules in the loop: the stop set, each model's answers on it, and the "stop" record of metrics.json.

The stop set is al.stop.set_size pool examples drawn once from the run's seed (the same on resume).
After training, model t answers it once (only when kappa or uncertainty is among al.stop.rules), and
round-t/stop_set.jsonl keeps the answers (id, prediction, uncertainty), so a resumed run computes kappa
against earlier models without running them again. The rules themselves are star.al.stopping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from star.al.seeds import derive_seed
from star.al.stopping import (
    AccuracyRule,
    BudgetRule,
    History,
    KappaRule,
    Rule,
    UncertaintyRule,
    evaluate,
    first_holding,
)
from star.config import RunConfig
from star.engine.answers import model_answers
from star.engine.modeling import LoadedModel
from star.engine.precision import scoring_precision
from star.loop.experiment import Experiment, load_live_adapter
from star.parallel.distributed import Dist
from star.store.io import read_jsonl, write_jsonl
from star.store.validate import jsonl_problem, record_problem
from star.tasks import Example, Task

log = logging.getLogger("star")
_FILE = "stop_set.jsonl"


@dataclass
class StopAnswers:
    """One model's answers on the stop set, in stop-set order."""

    predictions: list[str | None]
    uncertainty: np.ndarray  # (m,) PE of each answer


def rules_of(config: RunConfig) -> list[Rule]:
    """The rules al.stop.rules names, in that order, with their thresholds."""
    stop = config.al.stop
    build = {"kappa": lambda: KappaRule(stop.kappa, stop.window), "uncertainty": lambda: UncertaintyRule(stop.uncertainty),
             "accuracy": lambda: AccuracyRule(stop.accuracy), "budget": lambda: BudgetRule(stop.budget)}
    return [build[name]() for name in stop.rules]


def stop_set_indices(n: int, size: int, seed: int) -> list[int]:
    """Indices of the stop set in a pool of n, sorted: a sample of `size` seeded by the run's seed (all of a
    smaller pool). Pure, so that tools replaying a finished run draw the same set."""
    if size >= n:
        return list(range(n))
    rng = np.random.default_rng(derive_seed(seed, 0, "stop"))
    return sorted(int(i) for i in rng.choice(n, size=size, replace=False))


def stop_set(exp: Experiment) -> list[int]:
    """Pool indices of the run's stop set (al.stop.set_size of its pool)."""
    return stop_set_indices(len(exp.pool), exp.config.al.stop.set_size, exp.config.seed)


def answer_stop_set(cfg: RunConfig, loaded: LoadedModel, task: Task, examples: list[Example],
                    prompts: list[list[int]], pad_id: int, show_progress: bool = False,
                    dist: Dist | None = None) -> StopAnswers:
    """The live model's answers (and their PE) on the stop set's examples, in al.precision, as the rules read them."""
    with scoring_precision(cfg.al.precision, loaded.model, loaded.device):
        preds, u = model_answers(loaded.model, loaded.tokenizer, task, examples, prompts, pad_id,
                                 mode=cfg.eval.resolved_mode(cfg.task), max_new_tokens=cfg.al.max_new_tokens,
                                 batch_size=cfg.al.batch_size, max_answer_tokens=cfg.train.max_answer_tokens,
                                 show_progress=show_progress, dist=dist)
    return StopAnswers(preds, np.asarray(u, dtype=np.float64))


def first_answered(cfg: RunConfig, t: int) -> int:
    """The oldest model whose stop-set answers the rules read after round t (earlier ones for kappa's window)."""
    return max(0, t - cfg.al.stop.window) if "kappa" in cfg.al.stop.rules else t


def _answer(exp: Experiment, s: int, idx: list[int]) -> StopAnswers:
    """Model s answers the stop set (every process takes part); the main process writes and records the file."""
    load_live_adapter(exp, s)
    answers = answer_stop_set(exp.config, exp.model, exp.task, [exp.pool[i] for i in idx],
                              [exp.pool_prompts[i] for i in idx], exp.pad_id, exp.show_progress, exp.dist)
    preds, u = answers.predictions, answers.uncertainty
    if exp.dist.is_main:
        write_jsonl(exp.run.stop_set_path(s), ({"id": exp.pool[i].id, "prediction": p, "uncertainty": float(v)}
                                               for i, p, v in zip(idx, preds, u)))
        exp.run.record(s, [_FILE])
    return answers


def _saved(exp: Experiment, s: int, ids: list[str]) -> StopAnswers | None:
    """Model s's answers as round-s/stop_set.jsonl recorded them; None when missing, damaged or of another set."""
    path = exp.run.stop_set_path(s)
    record = exp.run.recorded(s).get(_FILE)
    problem = (record_problem(path, record) if record is not None and exp.run.sealed
               else jsonl_problem(path, ("id", "prediction", "uncertainty")))
    if problem is not None:
        return None
    rows = read_jsonl(path)
    if [r.get("id") for r in rows] != ids:
        return None
    return StopAnswers([r["prediction"] for r in rows], np.array([r["uncertainty"] for r in rows], dtype=np.float64))


def stop_answers(exp: Experiment, t: int) -> list[StopAnswers]:
    """The stop-set answers the rules read after round t: models max(0, t - window) .. t, oldest first.

    Model t (live after training) answers now; earlier models' answers are read back from their round
    folders; only those missing or damaged are answered again, by their saved adapters. Every process calls this.
    """
    if not exp.config.al.stop.needs_stop_set:
        return []
    idx = stop_set(exp)
    ids = [exp.pool[i].id for i in idx]
    first = first_answered(exp.config, t)
    earlier = {s: _saved(exp, s, ids) for s in range(first, t)}  # read before this call writes anything
    current = _answer(exp, t, idx)
    for s, answers in earlier.items():
        if answers is None:
            log.info("round %d: stop-set answers missing or damaged; model %d answers the stop set again", t, s)
            earlier[s] = _answer(exp, s, idx)
    return [*(earlier[s] for s in range(first, t)), current]  # type: ignore[misc]


def still_unlabelled(exp: Experiment, t: int) -> list[int]:
    """Positions in the stop set of the examples no label was given for by round t; all of them when every one
    has one (a stop set as large as the pool, at the end): a model's answers on examples it was trained on
    agree by memory, not stability, and would lift kappa and lower the uncertainty."""
    labelled = {lab.example_id for lab in exp.store.up_to(t)}
    return unlabelled_positions([exp.pool[i].id for i in stop_set(exp)], labelled)


def unlabelled_positions(ids: list[str], labelled: set[str]) -> list[int]:
    """Positions of the stop-set ids without a label; all of them when every one has one."""
    keep = [j for j, i in enumerate(ids) if i not in labelled]
    return keep or list(range(len(ids)))


def stop_record(exp: Experiment, t: int, metrics: dict[str, Any], answers: list[StopAnswers]) -> dict[str, Any]:
    """metrics.json's "stop" of round t: every rule's value and verdict, and the rule that stops the run (the
    first that holds, in al.stop.rules order; only when al.stop.enforce and rounds remain), else None. Kappa and
    uncertainty read the stop set's examples still unlabelled after round t ("stop_set": how many of how many)."""
    record = rule_record(exp.config, t, metrics, answers, still_unlabelled(exp, t) if answers else [])
    stopped_by = record["stopped_by"]
    if stopped_by is not None:
        log.info("round %d: stopping rule %s holds (value %s): the run stops early", t, stopped_by,
                 record["rules"][stopped_by]["value"])
    return record


def rule_record(config: RunConfig, t: int, metrics: dict[str, Any], answers: list[StopAnswers],
                keep: list[int]) -> dict[str, Any]:
    """`stop_record` from its inputs alone: round t's metrics, the stop-set answers the rules read (oldest first)
    and the stop-set positions still unlabelled (`keep`)."""
    stop = config.al.stop
    cost = metrics.get("cost")
    total = float(cost["total"]) if isinstance(cost, dict) and "total" in cost else float(metrics["labels"])
    history = History(accuracy=[float(metrics["accuracy"])], labels=[int(metrics["labels"])], cost=[total],
                      predictions=[[a.predictions[j] for j in keep] for a in answers],
                      uncertainty=[float(answers[-1].uncertainty[keep].mean())] if answers else [])
    verdicts = evaluate(rules_of(config), history)
    holding = first_holding(verdicts)
    stopped_by = holding if stop.enforce and t < config.al.rounds - 1 else None
    record: dict[str, Any] = {"rules": {name: v.as_json() for name, v in verdicts.items()}, "stopped_by": stopped_by}
    if answers:
        record["stop_set"] = {"size": len(answers[-1].predictions), "unlabelled": len(keep)}
    return record


def stopped_early(exp: Experiment) -> str | None:
    """The rule that ended this run early, as its last finished round's metrics.json says (None: not stopped).
    Read from disk, so every process agrees; nothing is read when al.stop.rules is empty."""
    if not exp.config.al.stop.rules:
        return None
    rule = exp.run.stopped_by()
    if rule is not None:
        log.info("stopped early by %s after round %d", rule, len(exp.run.finished_rounds()) - 1)
    return rule
