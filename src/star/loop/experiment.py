"""The experiment: its config, data, model, label store and strategy, built once by `setup`; which adapter is live."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from star.al.strategies import Strategy, get_strategy
from star.annotation.context import Annotator
from star.annotation.oracle import Oracle
from star.annotation.registry import ANNOTATORS, AnnotatorDeps
from star.config import RunConfig, build_config, dump_config, load_stored_config
from star.engine.adapter import load_adapter_weights
from star.engine.batching import encode_prompts
from star.engine.chat import LocalChat
from star.engine.modeling import LoadedModel, check_model_config
from star.engine.placement import engine_label, load_for_engine
from star.engine.training import check_b_penalty
from star.errors import ConfigError
from star.parallel import distributed
from star.store.embeddings import EmbeddingCache
from star.store.labels import LabelStore
from star.store.lock import RunLock
from star.store.runs import RunDir
from star.store.session import resume_run, start_run
from star.tasks import Example, Task, build_task
from star.tracking import check_installed

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
    embedding_cache: EmbeddingCache | None = None  # the base model's prompt embeddings (loop/embeddings.py)
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
        strategy=get_strategy(config.al.strategy, idds_lambda=config.al.idds_lambda),
        pool_prompts=encode_prompts(tok, [task.prompt(e.question) for e in pool_full], config.train.max_prompt_tokens,
                                    system=task.system_prompt),
        test_prompts=encode_prompts(tok, [task.prompt(e.question) for e in test], config.train.max_prompt_tokens,
                                    system=task.system_prompt),
        show_progress=show_progress, lock=lock,
    )


def log_start(exp: Experiment, resumed: bool) -> None:
    """The run's first line in log.txt: what runs, on what, in how many processes."""
    processes = "" if exp.dist.world == 1 else f", {exp.dist.world} processes ({engine_label(exp.dist)})"
    log.info("%s run %s: task %s, %d pool, %d test, strategy %s%s", "resuming" if resumed else "starting",
             exp.run.path, exp.task.name, len(exp.pool), len(exp.test), exp.config.al.strategy, processes)



def load_live_adapter(exp: Experiment, t: int) -> None:
    """Make model t's adapter the live one (a no-op when it already is)."""
    if exp.live_round != t:
        load_adapter_weights(exp.model.model, exp.run.adapter_dir(t))
        exp.live_round = t
