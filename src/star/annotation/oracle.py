"""The simulated annotator: the only holder of the pool's gold labels, counting every read.

`reads` and `peeks` feed a round's `label_reads` and `gold_peeks` metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

from star.annotation.context import RoundContext
from star.store.labels import Label, LabelStore
from star.tasks.base import Example


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
        self.audits = 0

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

    def acquire(self, ctx: RoundContext, ids: Sequence[str]) -> list[str]:
        """Simulation: every selected id is labelled at once."""
        self.annotate(ids, ctx.store, ctx.round_index)
        return []

    def peek(self, ids: Sequence[str]) -> list[str]:
        """Gold answers for `gold`-response scoring; counted apart from acquisitions."""
        self.peeks += len(ids)
        return [self._answers[i] for i in ids]

    def gold(self, ids: Sequence[str]) -> list[str | None]:
        """Gold answers to grade another annotator's committed labels (its agreement metric), None where unknown.

        Counted in `audits`, apart from `reads` (labels handed out) and `peeks` (gold read for scoring).
        """
        self.audits += len(ids)
        return [self._answers.get(i) for i in ids]
