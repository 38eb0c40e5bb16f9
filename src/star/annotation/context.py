"""What an annotator is given and must do: a round's narrow context, never the model or the Experiment.

The loop builds a `RoundContext` for each round it asks for labels; the model is reached only
through `suggest`, so annotation stays free of engine, loop, torch and transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from star.store.labels import LabelStore
from star.store.runs import RunDir
from star.tasks import Task


@dataclass(frozen=True)
class RoundContext:
    """One round as an annotator sees it.

    `questions` maps every pool id to its question; `suggest(ids)` returns the current model's
    raw output text for each id, in order (model t-1's, for round t > 0).
    """

    store: LabelStore
    run: RunDir
    task: Task
    round_index: int
    questions: Mapping[str, str]
    suggest: Callable[[Sequence[str]], list[str]]


class Annotator(Protocol):
    """Turns the ids selected in a round into committed labels, now or later."""

    name: str

    def acquire(self, ctx: RoundContext, ids: Sequence[str]) -> list[str]:
        """Commit or request labels for `ids`; return the ids still without a label (empty: done)."""
        ...
