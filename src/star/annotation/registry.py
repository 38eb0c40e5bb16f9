"""Annotators. The oracle (simulation) is the only holder of the pool's gold labels and counts reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from star.store.labels import Label, LabelStore
from star.tasks.base import Example

if TYPE_CHECKING:
    from star.loop import Experiment


class Annotator(Protocol):
    """Turns the ids selected in a round into committed labels, now or later."""

    name: str

    def acquire(self, exp: "Experiment", round_index: int, ids: Sequence[str]) -> list[str]:
        """Commit or request labels for `ids`; return the ids still without a label (empty: done)."""
        ...


class Oracle:
    """Simulated annotator: answers with the dataset's label, through the label store.

    `reads` counts labels handed out for acquisition; `peeks` counts gold answers read for
    `gold`-response scoring (the release's behaviour, impossible in a real deployment).
    """

    name = "oracle"

    def __init__(self, examples: Sequence[Example]) -> None:
        self._answers = {e.id: e.answer for e in examples}
        self.reads = 0
        self.peeks = 0

    def annotate(self, ids: Sequence[str], store: LabelStore, round_index: int) -> list[Label]:
        """Label every id not yet in the store, committing each label in its own transaction."""
        labels = []
        for example_id in ids:
            if store.get(example_id) is not None:
                continue  # committed before a crash: never asked (nor paid) twice
            answer = self._answers[example_id]
            self.reads += 1
            labels.append(store.add(example_id, answer, self.name, round_index))
        return labels

    def acquire(self, exp: "Experiment", round_index: int, ids: Sequence[str]) -> list[str]:
        """Simulation: every selected id is labelled at once."""
        self.annotate(ids, exp.store, round_index)
        return []

    def peek(self, ids: Sequence[str]) -> list[str]:
        """Gold answers for `gold`-response scoring; counted apart from acquisitions."""
        self.peeks += len(ids)
        return [self._answers[i] for i in ids]


def _human(exp: "Experiment") -> Annotator:
    """People label through query files, `star label` and `star annotate` (imported lazily: no cycle)."""
    from star.annotation.human import HumanAnnotator

    return HumanAnnotator(exp)


#: Annotators by the name used in `al.annotator`; each factory gets the run's Experiment.
ANNOTATORS: dict[str, Callable[["Experiment"], Annotator]] = {"oracle": lambda exp: exp.oracle, "human": _human}
