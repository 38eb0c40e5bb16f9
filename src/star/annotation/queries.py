"""The files of a round that waits for people: the query (batch, suggestions, scores) and its todo.

Written by the loop's human annotator and read back, without a model, by `star query`, `star label`
and `star annotate`; one module so the format is defined in one place.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from star.annotation.context import RoundContext
from star.config import RunConfig, load_stored_config
from star.errors import RunStateError
from star.store.io import atomic_write, read_jsonl, write_jsonl
from star.store.labels import Label, LabelStore
from star.store.runs import RunDir
from star.tasks import Task, build_task

#: Columns of the exported CSV files, in order (todo files add `answer` after `suggestion`).
QUERY_COLUMNS = ("id", "question", "suggestion", "score", "round", "answer_type", "choices", "raw_output")


# --- files of a round ------------------------------------------------------------------------

def batch_path(run: RunDir, t: int, kind: str = "query", ext: str = "jsonl") -> Path:
    """round-<t>/<kind>.<ext>, kind 'query' (the whole batch) or 'todo' (still unlabelled)."""
    return run.round_dir(t) / f"{kind}.{ext}"


def _csv_text(rows: Sequence[dict[str, Any]], with_answer: bool) -> str:
    columns = list(QUERY_COLUMNS)
    if with_answer:
        columns.insert(columns.index("suggestion") + 1, "answer")
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        cells = {k: _spreadsheet_safe(v) for k, v in {**row, "choices": "|".join(row.get("choices") or [])}.items()}
        writer.writerow({**cells, "answer": ""} if with_answer else cells)
    return out.getvalue()


def _spreadsheet_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (=, +, @, -x, tab, CR first) gets a leading quote."""
    if isinstance(value, str) and value and (value[0] in "=+@\t\r" or (value[0] == "-" and not value[1:2].isdigit())):
        return "'" + value
    return value


def write_batch(run: RunDir, t: int, kind: str, rows: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """Write round t's `kind` batch as JSONL and CSV (atomically); todo files carry an empty answer."""
    with_answer = kind == "todo"
    jsonl, csv_path = batch_path(run, t, kind, "jsonl"), batch_path(run, t, kind, "csv")
    write_jsonl(jsonl, ({**r, "answer": ""} if with_answer else r for r in rows))
    atomic_write(csv_path, _csv_text(rows, with_answer))
    return jsonl, csv_path


# --- the query ------------------------------------------------------------------------------

def saved_query(path: Path) -> list[dict[str, Any]] | None:
    """The query already written for a round, or None when there is none (or it is damaged)."""
    if not path.is_file():
        return None
    try:
        return read_query(path)
    except RunStateError:
        return None


def export_query(ctx: RoundContext, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Write the round's query (question, the model's suggestion, score) as JSONL and CSV; return its rows."""
    t = ctx.round_index
    questions = [ctx.questions[i] for i in ids]
    scores_file = ctx.run.scores_path(t)
    scores = {r["id"]: r["score"] for r in read_jsonl(scores_file)} if scores_file.is_file() else {}
    outputs = ctx.suggest(ids)
    rows = [query_row(ctx.task, t, example_id, question, output, scores.get(example_id))
            for example_id, question, output in zip(ids, questions, outputs)]
    write_batch(ctx.run, t, "query", rows)
    return rows


def query_row(task: Task, t: int, example_id: str, question: str, output: str, score: float | None) -> dict[str, Any]:
    """One query item: the model's output and its extracted answer as the suggestion."""
    suggestion = output.strip() if task.answer_type == "text" else (task.extract(output) or "")
    return {"id": example_id, "question": question, "suggestion": suggestion, "score": score, "round": t,
            "answer_type": task.answer_type, "choices": list(task.choices) if task.choices else None,
            "raw_output": output}


def read_query(path: Path) -> list[dict[str, Any]]:
    """The rows of a query file the loop wrote, or a RunStateError saying how to re-export it."""
    try:
        rows = read_jsonl(path)
        if all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows):
            return rows
    except (OSError, ValueError):
        pass
    raise RunStateError(f"{path} is damaged", hint="delete it; `star run --resume` writes it again")


# --- the open round (no model needed) ----------------------------------------------------------

@dataclass
class OpenRound:
    """The round of a run that waits for human labels, and its query."""

    run: RunDir
    config: RunConfig
    task: Task
    index: int
    items: list[dict[str, Any]]

    @property
    def query_path(self) -> Path:
        """round-<t>/query.jsonl of this round."""
        return batch_path(self.run, self.index)

    def item_ids(self) -> set[str]:
        """Ids of the batch."""
        return {r["id"] for r in self.items}

    def labels(self) -> dict[str, Label]:
        """Committed labels of the whole run, by id (read fresh from the store)."""
        store = LabelStore(self.run.labels_path)
        try:
            return {lab.example_id: lab for lab in store.all()}
        finally:
            store.close()

    def remaining(self) -> list[dict[str, Any]]:
        """Items of the batch without a committed label."""
        labelled = self.labels()
        return [r for r in self.items if r["id"] not in labelled]


def open_round(run_dir: str | Path) -> OpenRound:
    """The first unfinished round of a run, which must have a query; RunStateError otherwise."""
    try:
        run = RunDir.open(run_dir)
    except ValueError:
        raise RunStateError(f"{run_dir!r} is not a valid path", hint="pass the run's output_dir") from None
    config = load_stored_config(run.config_path)
    task = build_task(config.task)
    t = len(run.finished_rounds())
    if t >= config.al.rounds:
        raise RunStateError(f"{run.path} is finished: all {config.al.rounds} rounds have metrics",
                            hint="nothing left to label; start a new run to label more")
    if config.al.stop.rules and (rule := run.stopped_by()) is not None:
        raise RunStateError(f"{run.path} is finished: stopping rule {rule} ended it after round {t - 1} (al.stop)",
                            hint="nothing left to label; start a new run (e.g. with al.stop.enforce=false) to label more")
    path = batch_path(run, t)
    if not path.is_file():
        if config.al.annotator != "human":
            hint = f"this run's al.annotator is {config.al.annotator!r}; start a run with al.annotator=human"
        else:
            hint = f"run `star run --resume {run.path}`: it selects round {t}, writes {path} and stops for labels"
        raise RunStateError(f"round {t} of {run.path} has no query to answer yet", hint=hint)
    return OpenRound(run, config, task, t, read_query(path))


def write_todo(open_: OpenRound) -> tuple[Path, Path, int]:
    """Rewrite round-<t>/todo.{jsonl,csv} with the items still to answer; return paths and count."""
    rest = open_.remaining()
    jsonl, csv_path = write_batch(open_.run, open_.index, "todo", rest)
    return jsonl, csv_path, len(rest)
