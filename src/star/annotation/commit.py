"""Answers committed to a run's label store: a whole file (all or nothing), corrections, one answer from the page.

A committed label is final: the store never overwrites one; corrections keep the old label in its history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from star.annotation.answers import AnswerRow, Problems, annotator_problem, answer_fix, answer_problem, read_answers
from star.annotation.queries import OpenRound, open_round
from star.config import load_stored_config
from star.errors import DataError, RunStateError
from star.store.labels import Label, LabelStore
from star.store.runs import RunDir
from star.tasks import Task, build_task

DEFAULT_ANNOTATOR = "human"


_Problem = tuple[str, str]  # (what is wrong, how to fix it)


def _row_problem(task: Task, row: AnswerRow, seen: dict[str, int], id_fix: str,
                 id_problem: Callable[[str], _Problem | None],
                 answer_problem_more: Callable[[AnswerRow], _Problem | None] = lambda row: None,
                 answer_suffix: str = "") -> _Problem | None:
    """The first problem of one answers row: id, duplicate, `id_problem` (may this id be given
    here?), answer, `answer_problem_more`, annotator; None when the row is good."""
    if not isinstance(row.id, str) or not row.id.strip():
        what = "missing field 'id'" if row.id is None else f"field 'id' must be non-empty text, got {row.id!r:.40}"
        return what, id_fix
    if row.id in seen:
        return f"id {row.id!r} appears again (first on line {seen[row.id]})", "keep one answer per id"
    if (problem := id_problem(row.id)) is not None:
        return problem
    if row.answer is None:
        return "missing field 'answer'", answer_fix(task)
    if (what := answer_problem(task, row.answer)) is not None:
        return what, answer_fix(task) + answer_suffix
    if (problem := answer_problem_more(row)) is not None:
        return problem
    if row.annotator is not None and (what := annotator_problem(row.annotator)) is not None:
        return what, "fix the annotator name or drop the field"
    return None


def _check_rows(task: Task, rows: Sequence[AnswerRow], problems: Problems, id_fix: str,
                id_problem: Callable[[str], _Problem | None], **more: Any) -> None:
    """Add the first problem of every row (see `_row_problem`) to `problems`."""
    seen: dict[str, int] = {}
    for row in rows:
        if (problem := _row_problem(task, row, seen, id_fix, id_problem, **more)) is not None:
            problems.add(row.line, *problem)
        if isinstance(row.id, str):
            seen.setdefault(row.id, row.line)


def _queried_unlabelled(open_: OpenRound, labelled: dict[str, Label]) -> Callable[[str], _Problem | None]:
    """An id check for importing: the id must be in the open round's query and have no label yet."""
    def problem(example_id: str) -> _Problem | None:
        if example_id not in open_.item_ids():
            return (f"unknown id {example_id!r:.80}: not in round {open_.index}'s query",
                    f"use an id from {open_.query_path}")
        if example_id in labelled:
            lab = labelled[example_id]
            return (f"id {example_id!r} already has a committed label ({lab.answer!r:.40} by {lab.annotator})",
                    "remove the line: a committed label is never overwritten")
        return None
    return problem


def _one_annotator(rows: Sequence[AnswerRow], default: str, problems: Problems) -> str:
    """The annotator of the whole import: the file's (one name for all rows) or `default`."""
    named = [r for r in rows if isinstance(r.annotator, str)]
    if not named:
        return default
    first = named[0]
    for row in named[1:]:
        if row.annotator != first.annotator:
            problems.add(row.line, f"annotator {row.annotator!r:.40} differs from {first.annotator!r:.40} "
                         f"on line {first.line}", "import one file per annotator")
            break
    if len(named) != len(rows):
        problems.add(next(r.line for r in rows if not isinstance(r.annotator, str)),
                     "no annotator, while other lines name one", "name it on every line or on none")
    return first.annotator


def import_labels(run_dir: str | Path, file: str | Path, annotator: str = DEFAULT_ANNOTATOR) -> int:
    """Import a JSONL/CSV answers file into the open round, all or nothing; return the labels committed."""
    open_ = open_round(run_dir)
    if (problem := annotator_problem(annotator)) is not None:
        raise DataError(problem, hint="pass --annotator NAME")
    rows, problems = read_answers(file)
    check_import(open_, rows, problems, open_.labels())
    who = _one_annotator(rows, annotator, problems)
    problems.raise_if_any()
    return commit_import(open_, rows, who)


def check_import(open_: OpenRound, rows: Sequence[AnswerRow], problems: Problems, labelled: dict[str, Label],
                 answer_suffix: str = ", or remove the line to answer it later") -> None:
    """`star label`'s checks of rows for the open round (from a file or Label Studio): add each row's first problem."""
    _check_rows(open_.task, rows, problems, f"give the id of an item in {open_.query_path}",
                _queried_unlabelled(open_, labelled), answer_suffix=answer_suffix)


def commit_import(open_: OpenRound, rows: Sequence[AnswerRow], annotator: str) -> int:
    """Commit checked rows to the open round in one transaction (all or none); return how many."""
    store = LabelStore(open_.run.labels_path)
    try:
        store.add_many([(r.id, r.answer) for r in rows], annotator, open_.index)
    finally:
        store.close()
    return len(rows)


def _check_corrections(task: Task, rows: Sequence[AnswerRow], labelled: dict[str, Label], problems: Problems) -> None:
    """Add every correction row's first problem: its id must have a label, and the answer must change."""
    def unlabelled(example_id: str) -> _Problem | None:
        if example_id in labelled:
            return None
        return (f"id {example_id!r:.80} has no committed label to correct",
                "label it with `star label` (without --correct) once it is queried")

    def unchanged(row: AnswerRow) -> _Problem | None:
        if row.answer != labelled[row.id].answer:
            return None
        return f"id {row.id!r} already has the answer {row.answer!r:.40}", "remove the line"

    _check_rows(task, rows, problems, "give the id of a labelled example", unlabelled, answer_problem_more=unchanged)


def correct_labels(run_dir: str | Path, file: str | Path, annotator: str = DEFAULT_ANNOTATOR) -> list[tuple[Label, Label]]:
    """Replace committed answers from a JSONL/CSV file, all or nothing; the old labels go to the history.

    Works on any run, finished or not. Models already trained keep their adapters; every model
    trained afterwards (the next round, or a new run from these labels) uses the corrected answers.
    """
    try:
        run = RunDir.open(run_dir)
    except ValueError:
        raise RunStateError(f"{run_dir!r} is not a valid path", hint="pass the run's output_dir") from None
    task = build_task(load_stored_config(run.config_path).task)
    if (problem := annotator_problem(annotator)) is not None:
        raise DataError(problem, hint="pass --annotator NAME")
    rows, problems = read_answers(file)
    store = LabelStore(run.labels_path)
    try:
        _check_corrections(task, rows, {lab.example_id: lab for lab in store.all()}, problems)
        who = _one_annotator(rows, annotator, problems)
        problems.raise_if_any()
        return store.correct_many([(r.id, r.answer) for r in rows], who)
    finally:
        store.close()


class AlreadyLabelled(DataError):
    """The example already has a committed label (labels are never overwritten)."""


def commit_answer(open_: OpenRound, example_id: Any, answer: Any, annotator: str) -> Label:
    """Check and commit one answer to the open round (for the page); DataError says what is wrong."""
    if not isinstance(example_id, str) or example_id not in open_.item_ids():
        raise DataError(f"unknown id {example_id!r:.80}: not in round {open_.index}'s query",
                        hint="reload the page to get the current batch")
    if (problem := answer_problem(open_.task, answer)) is not None:
        raise DataError(problem, hint=answer_fix(open_.task))
    store = LabelStore(open_.run.labels_path)
    try:
        return store.add(example_id, answer, annotator, open_.index)
    except DataError:
        lab = store.get(example_id)
        if lab is None:
            raise
        raise AlreadyLabelled(f"{example_id!r} already has a committed label ({lab.answer!r:.40} by {lab.annotator})",
                              hint="a committed label is never overwritten") from None
    finally:
        store.close()
