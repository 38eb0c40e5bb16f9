"""Annotators by the name `al.annotator` takes; `config.ANNOTATOR_NAMES` lists the same names (a test pins them).

A factory gets the run's `AnnotatorDeps` and returns the annotator; the annotator then gets a
`RoundContext` each round. The deps hold the run's oracle (the simulation must be that one
instance: the loop reads its counters for the metrics), the config, and the maker of the local
chat model, which the loop builds from star.engine (annotation never loads a model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from star.annotation.chat import ChatBackend
from star.annotation.context import Annotator, RoundContext
from star.annotation.human import HumanAnnotator
from star.annotation.llm import LLMAnnotator
from star.annotation.openai_chat import OpenAIChat
from star.annotation.oracle import Oracle
from star.config import RunConfig
from star.errors import ConfigError


@dataclass(frozen=True)
class AnnotatorDeps:
    """What an annotator factory may use: the oracle, the run's config, and the local chat model's maker."""

    oracle: Oracle
    config: RunConfig
    local_chat: Callable[[], ChatBackend] | None = None  # cheap to call: the model loads on its first request


def _llm(deps: AnnotatorDeps) -> LLMAnnotator:
    """The LLM annotator on its backend; the backend is made now, so a missing API key stops the run at once."""
    s = deps.config.llm_annotator
    if s.backend == "openai":
        backend: ChatBackend = OpenAIChat(s.base_url or "", s.model, api_key_env=s.api_key_env,
                                          max_tokens=s.max_new_tokens, temperature=s.temperature, timeout=s.timeout,
                                          max_retries=s.max_retries, backoff=s.backoff)
    elif deps.local_chat is not None:
        backend = deps.local_chat()
    else:
        raise ConfigError("llm_annotator.backend=local needs the local model, which only a run (star.run) provides",
                          hint="run it through `star run`, or set llm_annotator.backend=openai with a base_url")
    fallback = deps.oracle if s.fallback == "oracle" else HumanAnnotator()
    return LLMAnnotator(s, lambda: backend, fallback, gold=deps.oracle.gold)


#: Annotators by the name used in `al.annotator`; each factory gets the run's AnnotatorDeps.
ANNOTATORS: dict[str, Callable[[AnnotatorDeps], Annotator]] = {
    "oracle": lambda deps: deps.oracle,
    "human": lambda deps: HumanAnnotator(),
    "llm": _llm,
}


def annotator_metrics(annotator: Annotator, ctx: RoundContext) -> dict[str, Any]:
    """A round's extra figures from an annotator that reports some (`round_metrics(ctx)`: the LLM's tokens, cost,
    agreement); none from the others."""
    report = getattr(annotator, "round_metrics", None)
    return dict(report(ctx)) if callable(report) else {}
