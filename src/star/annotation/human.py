"""People in the loop: the annotator that stops a round until people have labelled its batch.

When `al.annotator` is `human`, the loop stops after selecting a round and `HumanAnnotator`
writes the batch to answer (star.annotation.queries):

    DIR/round-<t>/query.jsonl, query.csv   the whole batch: id, question, suggestion, score, ...
    DIR/round-<t>/todo.jsonl, todo.csv     the items still without a label, with an empty `answer`

Answers come back through `import_labels` (`star label DIR FILE`) or the annotation page
(`star annotate DIR`), both in star.annotation.commit; both commit to the run's label store
with the round's index, and `star run --resume DIR` trains once every item of the batch is
labelled. A committed label is final: the store never overwrites one, so no answer is ever
lost or counted twice.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from star.annotation.context import RoundContext
from star.annotation.queries import batch_path, export_query, saved_query, write_batch
from star.store.runs import RunDir


class HumanAnnotator:
    """People label: the loop stops with the round's query written, and resumes once all are labelled."""

    name = "human"

    def acquire(self, ctx: RoundContext, ids: Sequence[str]) -> list[str]:
        """Return the ids still unlabelled; when there are some, make sure the query files exist."""
        missing = [i for i in ids if ctx.store.get(i) is None]
        if not missing:
            return []
        t = ctx.round_index
        rows = saved_query(batch_path(ctx.run, t))
        if rows is None or [r["id"] for r in rows] != list(ids):
            rows = export_query(ctx, ids)
        todo = set(missing)
        write_batch(ctx.run, t, "todo", [r for r in rows if r["id"] in todo])
        _tell(ctx.run, t, len(missing), len(ids))
        return missing


def _tell(run: RunDir, t: int, missing: int, total: int) -> None:
    """Say, on stderr, that the run stopped for labels and how to give them."""
    print(f"round {t} waits for {missing} of {total} label(s); answer them with `star annotate {run.path}`, or fill "
          f"{batch_path(run, t, 'todo', 'csv')} and run `star label {run.path} FILE`; then `star run --resume {run.path}`",
          file=sys.stderr)
