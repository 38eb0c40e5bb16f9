"""The rounds: select -> label -> train -> evaluate, and `run`, which resumes after the last finished round.

Round 0 draws L0 at random (and scores the pool once with the base model, when the strategy
needs it). Round t >= 1 scores the unlabelled pool with model t-1, selects k examples with
lambda(t-1), has them labelled, trains model t on all labels and evaluates it. Every random draw
is seeded by (seed, round, purpose), so a run resumed after a kill ends with the same selections
and metrics as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from star.al.seeds import derive_seed
from star.annotation.context import RoundContext
from star.annotation.registry import annotator_metrics
from star.config import RunConfig
from star.console import log_to, print_rounds
from star.engine.adapter import reset_adapter, save_adapter
from star.engine.answers import model_answers
from star.engine.batching import encode_responses
from star.engine.evaluation import evaluate
from star.engine.generation import generate
from star.engine.training import train_adapter
from star.loop.cost import cost_metrics
from star.loop.experiment import Experiment, load_live_adapter, log_start, setup
from star.loop.provenance import machine_record
from star.loop.selection import select_round
from star.loop.stopping import stop_answers, stop_record, stopped_early
from star.parallel import signals
from star.parallel.params import adapter_state
from star.store.io import write_json, write_jsonl
from star.store.recovery import check_selection
from star.tracking import track_run

log = logging.getLogger("star")


def train_round(exp: Experiment, t: int) -> dict[str, Any]:
    """Fit model t on all labels up to round t: a fresh adapter, or warm from model t-1."""
    cfg = exp.config
    if cfg.train.warm_start and t > 0:
        load_live_adapter(exp, t - 1)
    else:
        reset_adapter(exp.model.model, derive_seed(cfg.seed, t, "init"))
    labels = exp.store.up_to(t)
    position = {e.id: i for i, e in enumerate(exp.pool)}
    prompts = [exp.pool_prompts[position[lab.example_id]] for lab in labels]
    targets = [exp.task.target_for(exp.pool[position[lab.example_id]], lab.answer) for lab in labels]
    responses = encode_responses(exp.model.tokenizer, targets, cfg.train.max_answer_tokens)
    stats = train_adapter(exp.model.model, prompts, responses, exp.pad_id, cfg.train,
                          derive_seed(cfg.seed, t, "train"), exp.show_progress, dist=exp.dist)
    state = adapter_state(exp.model.model) if exp.dist.sharded else None  # whole tensors: every process takes part
    if exp.dist.is_main:
        save_adapter(exp.model.model, exp.run.adapter_dir(t), state)
    exp.live_round = t
    return {"steps": stats.steps, "examples": stats.examples, "tokens": stats.tokens,
            "final_loss": stats.final_loss, "mean_loss": stats.mean_loss, "precision": stats.precision}



# --- one round -------------------------------------------------------------------------------

def _suggestions(exp: Experiment, idx: list[int]) -> list[str]:
    """The live model's raw answers to pool examples `idx`: its greedy text, or with eval.mode=options (closed
    tasks) the option it finds likeliest, as evaluation grades it (a cloze-style answer names no letter)."""
    cfg, prompts = exp.config, [exp.pool_prompts[i] for i in idx]
    if cfg.eval.resolved_mode(cfg.task) == "options":
        choices, _ = model_answers(exp.model.model, exp.model.tokenizer, exp.task, [exp.pool[i] for i in idx], prompts,
                                   exp.pad_id, mode="options", max_new_tokens=cfg.al.max_new_tokens,
                                   batch_size=cfg.al.batch_size, max_answer_tokens=cfg.train.max_answer_tokens,
                                   show_progress=exp.show_progress)
        return [c or "" for c in choices]
    gens = generate(exp.model.model, exp.model.tokenizer, prompts, cfg.al.max_new_tokens, cfg.al.batch_size,
                    is_complete=exp.task.answer_complete, desc="generate (suggestions)", show_progress=exp.show_progress)
    return [g.text for g in gens]


def _round_context(exp: Experiment, t: int) -> RoundContext:
    """What round t's annotator gets: store, run, task, questions, and `suggest` (model t-1's raw outputs)."""
    def suggest(ids: Sequence[str]) -> list[str]:
        if t > 0:
            load_live_adapter(exp, t - 1)  # a resumed process starts with a fresh adapter: suggest with model t-1
        position = {e.id: i for i, e in enumerate(exp.pool)}
        return _suggestions(exp, [position[i] for i in ids])

    return RoundContext(store=exp.store, run=exp.run, task=exp.task, round_index=t,
                        questions={e.id: e.question for e in exp.pool}, suggest=suggest)


def run_round(exp: Experiment, t: int) -> dict[str, Any] | None:
    """Select, label, train and evaluate round t; metrics.json is written last.

    Returns None (and writes no metrics) when the annotator has not labelled every selected
    example yet: a human path, resumed once the labels are in the store.
    """
    cfg, seconds = exp.config, {}
    clock = time.perf_counter()
    reads0, peeks0 = exp.oracle.reads, exp.oracle.peeks
    committed_before = len(exp.store.in_round(t))
    selected, lam_t = exp.run.saved_selection(t), None  # a resumed round never re-ranks
    if selected is None:
        selected, lam_t = select_round(exp, t)
        check_selection(exp.run, t, selected, {lab.example_id for lab in exp.store.in_round(t)})
    else:
        lam_t = None if t == 0 else cfg.al.lambda_at(t - 1)
    seconds["score"] = time.perf_counter() - clock
    clock = time.perf_counter()
    extra: dict[str, Any] = {}
    if exp.dist.is_main:
        annotator, ctx = exp.annotator or exp.oracle, _round_context(exp, t)
        annotator.acquire(ctx, selected)
        extra = annotator_metrics(annotator, ctx)  # e.g. the LLM annotator's tokens, cost and agreement
    exp.dist.barrier()  # labels committed by the main process are visible to all
    labelled = {lab.example_id for lab in exp.store.in_round(t)}
    missing = [i for i in selected if i not in labelled]
    seconds["label"] = time.perf_counter() - clock
    if missing:
        log.info("round %d waits for %d label(s); resume with `star run --resume %s` once they are given",
                 t, len(missing), exp.run.path)
        return None
    clock = time.perf_counter()
    train = train_round(exp, t)
    seconds["train"] = time.perf_counter() - clock
    clock = time.perf_counter()
    result = evaluate(exp.model.model, exp.model.tokenizer, exp.task, exp.test, exp.test_prompts, cfg.eval,
                      exp.show_progress, mode=cfg.eval.resolved_mode(cfg.task),
                      max_answer_tokens=cfg.train.max_answer_tokens, dist=exp.dist)
    if exp.dist.is_main:
        write_jsonl(exp.run.predictions_path(t), result.predictions)
    seconds["eval"] = time.perf_counter() - clock
    clock = time.perf_counter()
    stop_set = stop_answers(exp, t)  # the stop set's answers: [] and no work unless kappa or uncertainty is a rule
    if stop_set:
        seconds["stop"] = time.perf_counter() - clock
    seconds["total"] = sum(seconds.values())
    metrics = {
        "round": t, "labels": len(exp.store.up_to(t)), "acquired": len(exp.store.in_round(t)),
        "label_reads": committed_before + exp.oracle.reads - reads0, "gold_peeks": exp.oracle.peeks - peeks0,
        "strategy": "random" if t == 0 else cfg.al.strategy, "lambda": lam_t,
        "accuracy": result.accuracy, "accuracy_norm": result.accuracy_norm, "eval_mode": result.mode,
        "ece": result.ece, "mean_confidence": result.mean_confidence, "n_test": result.n, "train": train,
        "seconds": seconds, "reliability": result.reliability, "cost": cost_metrics(exp, t),
        "machine": machine_record(exp.model.device, exp.dist.world), **extra,
    }
    if exp.dist.is_main and cfg.al.stop.rules:  # after every other entry: the budget reads metrics["cost"]
        metrics["stop"] = stop_record(exp, t, metrics, stop_set)
    if exp.dist.is_main:
        exp.run.seal_round(t)  # the round's files as written, recorded just before metrics.json
        write_json(exp.run.metrics_path(t), metrics)
    exp.dist.barrier()
    log.info("round %d: labels %d, accuracy %.4f, ece %.4f, %.1fs", t, metrics["labels"], result.accuracy, result.ece, seconds["total"])
    return metrics


#: The phase a signal interrupts, by the loop function it came in (for the message on stderr).
_PHASES = {"setup": "setup (loading data and model)", "select_round": "scoring and selection", "acquire": "labelling",
           "train_round": "training", "evaluate": "evaluation", "run_round": "writing the round's files"}


def run(config: RunConfig | dict[str, Any] | None = None, resume: str | Path | None = None,
        show_progress: bool = True) -> list[dict[str, Any]]:
    """Run a new experiment, or resume one after its last finished round; returns all rounds' metrics.

    SIGTERM / SIGINT stop it where it is with RunInterrupted (parallel/signals.py): every file is
    whole, and a resume continues. The main process holds the run's lock throughout.
    """
    with signals.stop_on_signals(_PHASES) as guard:
        exp = setup(config, resume, show_progress)
        guard.hint = f"continue with `star run --resume {exp.run.path}`"
        try:
            with log_to(log, exp.run.log_path) if exp.dist.is_main else contextlib.nullcontext():
                if exp.dist.is_main:
                    log_start(exp, resumed=resume is not None)
                with track_run(exp.config, exp.run, enabled=exp.dist.is_main) as tracking:  # main process only
                    first = exp.config.al.rounds if stopped_early(exp) else len(exp.run.finished_rounds())
                    for t in range(first, exp.config.al.rounds):  # a run a stopping rule ended stays stopped
                        if run_round(exp, t) is None:
                            break
                        tracking.sync()  # round t's metrics.json is written: send it (step = t)
                        if stopped_early(exp):
                            break
            metrics = exp.run.metrics()
            if show_progress and exp.dist.is_main:
                print_rounds(metrics, exp.run.path)
            return metrics
        finally:
            exp.store.close()
            if exp.lock is not None:
                exp.lock.release()
