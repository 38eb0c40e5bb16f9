"""Annotators. The oracle (simulation) is the only holder of the pool's gold labels and counts reads."""

from __future__ import annotations

from collections.abc import Sequence

from .labels import Label, LabelStore
from .tasks.base import Example


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

    def peek(self, ids: Sequence[str]) -> list[str]:
        """Gold answers for `gold`-response scoring; counted apart from acquisitions."""
        self.peeks += len(ids)
        return [self._answers[i] for i in ids]
