"""The rounds: score -> select -> label -> train -> evaluate, resumable after any interruption.

Round 0 draws L0 at random (and scores the pool once with the base model, when the strategy
needs it). Round t >= 1 scores the unlabelled pool with model t-1, selects k examples with
lambda(t-1), has them labelled, trains model t on all labels and evaluates it. Only this
module knows about rounds; every random draw is seeded by (seed, round, purpose), so a run
resumed after a kill ends with the same selections and metrics as an uninterrupted one.

Size: a little over 350 lines, for the run's guards (the run lock, recovery of damaged files,
signals; store/session.py, store/recovery.py and parallel/signals.py hold them, the loop
calls them); the rounds' phases stay together in one module.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from star.al.seeds import derive_seed
from star.al.strategies import ScoreInputs, Strategy, get_strategy
from star.al.uncertainty import Uncertainty
from star.annotation.context import Annotator, RoundContext
from star.annotation.oracle import Oracle
from star.annotation.registry import ANNOTATORS, AnnotatorDeps, annotator_metrics
from star.config import RunConfig, build_config, dump_config, load_stored_config
from star.console import log_to, print_rounds
from star.engine.adapter import adapter_disabled, dropout_rate, load_adapter_weights, reset_adapter, save_adapter
from star.engine.batching import encode_prompts, encode_responses
from star.engine.chat import LocalChat
from star.engine.evaluation import evaluate
from star.engine.generation import generate
from star.engine.modeling import LoadedModel, check_model_config
from star.engine.placement import engine_label, load_for_engine
from star.engine.precision import autocast
from star.engine.scoring import greedy_uncertainty, score_options, score_pairs
from star.engine.training import check_b_penalty, train_adapter
from star.errors import ConfigError, PoolExhaustedError
from star.parallel import distributed, signals
from star.parallel.params import adapter_state
from star.store.io import append_jsonl, read_appended_jsonl, write_json, write_jsonl
from star.store.labels import LabelStore
from star.store.lock import RunLock
from star.store.recovery import check_selection
from star.store.runs import RunDir
from star.store.session import resume_run, start_run
from star.tasks import Example, Task, build_task
from star.tracking import check_installed, track_run

log = logging.getLogger("star")


@dataclass
class Experiment:
    """Everything a round needs; built once by `setup`."""

    config: RunConfig
    run: RunDir
    task: Task
    pool: list[Example]  # answers stripped: only the oracle holds them
    test: list[Example]
    oracle: Oracle
    store: LabelStore
    model: LoadedModel
    strategy: Strategy
    pool_prompts: list[list[int]]
    test_prompts: list[list[int]]
    dist: distributed.Dist = field(default_factory=distributed.Dist)
    show_progress: bool = True
    base_scores: dict[str, float] = field(default_factory=dict)  # id -> u_base (the strategy's measure)
    live_round: int = -1  # round whose adapter is loaded; -1 = fresh
    lock: RunLock | None = None  # held by the main process while it writes the run (store/lock.py)
    annotator: Annotator | None = None  # al.annotator's, built once by setup (None: the oracle)

    @property
    def pad_id(self) -> int:
        tok = self.model.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def _resolve(config: RunConfig | dict[str, Any] | None, resume: str | Path | None) -> tuple[RunConfig, RunDir, bool]:
    """The validated config and its run directory (not created yet for a new run)."""
    if resume is not None:
        run = RunDir.open(resume)
        return load_stored_config(run.config_path), run, True
    if config is None:
        config = build_config()
    elif isinstance(config, dict):
        config = build_config(config)
    problems = check_model_config(config.model)
    if problems:
        raise ConfigError("; ".join(problems))
    RunDir.refuse_existing(config.output_dir)
    return config, RunDir(config.output_dir), False


def setup(config: RunConfig | dict[str, Any] | None = None, resume: str | Path | None = None,
          show_progress: bool = True) -> Experiment:
    """Validate, load data (checking the pool), then the model; write config.yaml for a new run."""
    config, run, resumed = _resolve(config, resume)
    check_installed(config.tracking.log_with)  # a tracker's missing package stops the run before any model loads
    task = build_task(config.task)
    if config.al.response == "options" and not task.choices:
        raise ConfigError(f"al.response=options needs a closed answer set, and task {task.name!r} has none",
                          hint="use al.response=generated, or a task with choices (boolq, obqa, jsonl with answer_type=choice)")
    pool_full, test = task.load("pool"), task.load("test")
    config.check_pool(len(pool_full))
    dist = distributed.init(config.model.device)
    check_b_penalty(config.train, dist)
    if dist.world > 1 and config.al.annotator != "oracle":
        raise ConfigError(f"al.annotator={config.al.annotator} runs in one process",
                          hint="start `star run` without a multi-process launcher")
    oracle = Oracle(pool_full)  # the annotator is made before the model loads: a missing API key stops the run now
    annotator = ANNOTATORS[config.al.annotator](
        AnnotatorDeps(oracle, config, local_chat=lambda: LocalChat(config.llm_annotator, config.model)))
    lock = resume_run(run) if resumed and dist.is_main else None  # one writer per run; damaged files undone
    model = load_for_engine(config.model, config.lora, dist, show_progress)
    if not resumed and dist.is_main:  # only once everything loaded: a failed start leaves no half-made run behind
        run, lock = start_run(config.output_dir, dump_config(config))
    store = LabelStore(run.labels_path) if dist.is_main else None  # the main process creates the file
    dist.barrier()
    store = store or LabelStore(run.labels_path)
    tok = model.tokenizer
    return Experiment(
        config=config, run=run, task=task,
        pool=[Example(e.id, e.question, None, e.meta) for e in pool_full], test=test,
        oracle=oracle, store=store, model=model, dist=dist, annotator=annotator,
        strategy=get_strategy(config.al.strategy),
        pool_prompts=encode_prompts(tok, [task.prompt(e.question) for e in pool_full], config.train.max_prompt_tokens,
                                    system=task.system_prompt),
        test_prompts=encode_prompts(tok, [task.prompt(e.question) for e in test], config.train.max_prompt_tokens,
                                    system=task.system_prompt),
        show_progress=show_progress, lock=lock,
    )


def _log_start(exp: Experiment, resumed: bool) -> None:
    """The run's first line in log.txt: what runs, on what, in how many processes."""
    processes = "" if exp.dist.world == 1 else f", {exp.dist.world} processes ({engine_label(exp.dist)})"
    log.info("%s run %s: task %s, %d pool, %d test, strategy %s%s", "resuming" if resumed else "starting",
             exp.run.path, exp.task.name, len(exp.pool), len(exp.test), exp.config.al.strategy, processes)


# --- scoring ---------------------------------------------------------------------------------

def _responses(exp: Experiment, idx: list[int], use_base: bool) -> list[list[int]]:
    """Response ids to score: the model's own greedy answers, or the gold answers (peeked)."""
    cfg, tok = exp.config, exp.model.tokenizer
    if cfg.al.response == "gold":
        answers = exp.oracle.peek([exp.pool[i].id for i in idx])
        texts = [exp.task.target(a) for a in answers]
        return encode_responses(tok, texts, cfg.train.max_answer_tokens)
    prompts = [exp.pool_prompts[i] for i in idx]
    desc = "generate (base)" if use_base else "generate (pool)"
    gens = generate(exp.model.model, tok, prompts, cfg.al.max_new_tokens, cfg.al.batch_size,
                    is_complete=exp.task.answer_complete, desc=desc, show_progress=exp.show_progress, dist=exp.dist)
    return [g.token_ids or [tok.eos_token_id] for g in gens]


def _uncertainty(exp: Experiment, idx: list[int], use_base: bool, seed: int) -> Uncertainty:
    """Generation and scoring of pool examples `idx`, in al.precision: al.mc_passes MC-dropout passes, or one
    deterministic pass for the base model (nothing to drop out) or with al.mc_dropout off, taken from the greedy
    generation itself (al.score_from_generation); the MC passes drop out with al.mc_dropout_p (null: lora.dropout)."""
    cfg = exp.config.al
    prompts = [exp.pool_prompts[i] for i in idx]
    passes = cfg.mc_passes if cfg.mc_dropout and not use_base else 1
    mc_p = cfg.mc_dropout_p if passes > 1 else None
    with autocast(cfg.precision, exp.model.device), dropout_rate(exp.model.model, mc_p):
        if cfg.response == "options":
            options = encode_responses(exp.model.tokenizer, exp.task.choice_texts() or [],
                                       exp.config.train.max_answer_tokens)
            return score_options(exp.model.model, prompts, options, exp.pad_id, cfg.batch_size, passes=passes,
                                 seed=seed, show_progress=exp.show_progress, dist=exp.dist)
        if cfg.response == "generated" and passes == 1 and cfg.score_from_generation:  # no second forward
            return greedy_uncertainty(exp.model.model, exp.model.tokenizer, prompts, exp.pad_id, cfg.max_new_tokens,
                                      cfg.batch_size, exp.task.answer_complete, desc="base" if use_base else "pool",
                                      show_progress=exp.show_progress, dist=exp.dist)
        responses = _responses(exp, idx, use_base)
        return score_pairs(exp.model.model, prompts, responses, exp.pad_id, cfg.batch_size, passes=passes,
                           seed=seed, desc="score (base)" if use_base else "score (pool)",
                           show_progress=exp.show_progress, dist=exp.dist)


def ensure_base_scores(exp: Experiment, idx: list[int]) -> None:
    """u_base for pool examples `idx`, each computed once with the adapter off and stored in the run."""
    measure = exp.strategy.measure
    if not exp.strategy.uses_base or measure is None:
        return
    path = exp.run.base_scores_path
    if not exp.base_scores and path.is_file():
        exp.base_scores = {r["id"]: r[measure] for r in read_appended_jsonl(path)}
    missing = [i for i in idx if exp.pool[i].id not in exp.base_scores]
    if not missing:
        return
    with adapter_disabled(exp.model.model):
        u = _uncertainty(exp, missing, use_base=True, seed=0)
    rows = [{"id": exp.pool[i].id, "pe": float(u.pe[j].mean()), "me": float(u.me[j].mean())} for j, i in enumerate(missing)]
    if exp.dist.is_main:
        append_jsonl(path, rows)  # O(new rows): earlier rounds' rows are not rewritten
    exp.base_scores.update({exp.pool[i].id: float(getattr(u, measure)[j].mean()) for j, i in enumerate(missing)})


# --- selection -------------------------------------------------------------------------------

def _unlabelled(exp: Experiment, t: int) -> list[int]:
    """Pool examples without a label from rounds before t (round t's own, if a resume has some, stay candidates)."""
    labelled = {lab.example_id for lab in exp.store.all() if lab.round < t}
    return [i for i, e in enumerate(exp.pool) if e.id not in labelled]


def _candidates(exp: Experiment, t: int) -> list[int]:
    """The pool examples scored in round t: all unlabelled, or a seeded subsample."""
    free = _unlabelled(exp, t)
    size = exp.config.al.score_subsample
    if t == 0 or size is None or size >= len(free):
        return free
    rng = np.random.default_rng(derive_seed(exp.config.seed, t, "subsample"))
    return sorted(int(i) for i in rng.choice(free, size=size, replace=False))


def select_round(exp: Experiment, t: int) -> tuple[list[str], float | None]:
    """Rank the candidates, write round-t/scores.jsonl, and return the selected ids and lambda."""
    cfg = exp.config
    idx = _candidates(exp, t)
    k = cfg.al.initial if t == 0 else cfg.al.query
    if len(idx) < k:
        raise PoolExhaustedError(f"round {t} needs {k} unlabelled examples but only {len(idx)} are left",
                                 hint="raise al.score_subsample or lower al.query")
    ids = [exp.pool[i].id for i in idx]
    if t > 0 or cfg.al.score_subsample is None:  # round 0 scores the whole pool only when unsubsampled
        ensure_base_scores(exp, idx)
    u_base = np.array([exp.base_scores[i] for i in ids]) if all(i in exp.base_scores for i in ids) and exp.base_scores else None
    strategy, lam_t, u_full = exp.strategy, None, None
    if t == 0:
        strategy = get_strategy("random")  # L0 is a random draw, whatever the strategy
    else:
        lam_t = cfg.al.lambda_at(t - 1)
        if strategy.uses_full and strategy.measure is not None:
            load_live_adapter(exp, t - 1)
            u_full = _uncertainty(exp, idx, use_base=False, seed=derive_seed(cfg.seed, t, "mc")).mean(strategy.measure)
    rng = np.random.default_rng(derive_seed(cfg.seed, t, "initial" if t == 0 else "select"))
    scores, chosen = strategy.select(ScoreInputs(u_base, u_full, lam_t or 0.0, rng, len(idx)), k)
    if exp.dist.is_main:
        exp.run.write_scores(t, ids, u_base, u_full, scores, chosen)
    return [ids[int(c)] for c in chosen], lam_t


# --- model state -----------------------------------------------------------------------------

def load_live_adapter(exp: Experiment, t: int) -> None:
    """Make model t's adapter the live one (a no-op when it already is)."""
    if exp.live_round != t:
        load_adapter_weights(exp.model.model, exp.run.adapter_dir(t))
        exp.live_round = t


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
    responses = encode_responses(exp.model.tokenizer, [exp.task.target(lab.answer) for lab in labels], cfg.train.max_answer_tokens)
    stats = train_adapter(exp.model.model, prompts, responses, exp.pad_id, cfg.train,
                          derive_seed(cfg.seed, t, "train"), exp.show_progress, dist=exp.dist)
    state = adapter_state(exp.model.model) if exp.dist.sharded else None  # whole tensors: every process takes part
    if exp.dist.is_main:
        save_adapter(exp.model.model, exp.run.adapter_dir(t), state)
    exp.live_round = t
    return {"steps": stats.steps, "examples": stats.examples, "tokens": stats.tokens,
            "final_loss": stats.final_loss, "mean_loss": stats.mean_loss, "precision": stats.precision}


# --- one round -------------------------------------------------------------------------------

def _round_context(exp: Experiment, t: int) -> RoundContext:
    """What round t's annotator gets: store, run, task, questions, and `suggest` (model t-1's raw outputs)."""
    def suggest(ids: Sequence[str]) -> list[str]:
        if t > 0:
            load_live_adapter(exp, t - 1)  # a resumed process starts with a fresh adapter: suggest with model t-1
        cfg, position = exp.config, {e.id: i for i, e in enumerate(exp.pool)}
        gens = generate(exp.model.model, exp.model.tokenizer, [exp.pool_prompts[position[i]] for i in ids],
                        cfg.al.max_new_tokens, cfg.al.batch_size, is_complete=exp.task.answer_complete,
                        desc="generate (suggestions)", show_progress=exp.show_progress)
        return [g.text for g in gens]

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
    seconds["total"] = sum(seconds.values())
    metrics = {
        "round": t, "labels": len(exp.store.up_to(t)), "acquired": len(exp.store.in_round(t)),
        "label_reads": committed_before + exp.oracle.reads - reads0, "gold_peeks": exp.oracle.peeks - peeks0,
        "strategy": "random" if t == 0 else cfg.al.strategy, "lambda": lam_t,
        "accuracy": result.accuracy, "accuracy_norm": result.accuracy_norm, "eval_mode": result.mode,
        "ece": result.ece, "mean_confidence": result.mean_confidence, "n_test": result.n, "train": train,
        "seconds": seconds, "reliability": result.reliability, **extra,
    }
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
                    _log_start(exp, resumed=resume is not None)
                with track_run(exp.config, exp.run, enabled=exp.dist.is_main) as tracking:  # main process only
                    for t in range(len(exp.run.finished_rounds()), exp.config.al.rounds):
                        if run_round(exp, t) is None:
                            break
                        tracking.sync()  # round t's metrics.json is written: send it (step = t)
            metrics = exp.run.metrics()
            if show_progress and exp.dist.is_main:
                print_rounds(metrics, exp.run.path)
            return metrics
        finally:
            exp.store.close()
            if exp.lock is not None:
                exp.lock.release()
