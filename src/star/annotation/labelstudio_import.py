"""Label Studio's JSON export read back into the open round: `star label`'s checks, then all or nothing.

The file is Label Studio's standard "JSON" export: a list of tasks, each with `data` (star_id,
star_round, question, as `star labelstudio export` wrote them) and `annotations[].result[]`. How
each task counts:

- an annotation with `was_cancelled` (skipped in Label Studio) is no answer: it is ignored, and a
  task with no other annotation stays open for a later round of annotating;
- a task with no annotation is not answered yet and stays open;
- several annotations of one task must agree (the same canonical answer); if not, nothing is imported;
- a task of an earlier round is ignored: its label is committed (change one with `star label --correct`);
- a task whose id already has a label with the same answer was imported before and is skipped, so
  importing a newer export of the same project (or pulling again) is safe; a different answer is an error;
- the rest get `star label`'s checks: an id of the open round's query, once, and a valid answer.

Any problem gives one DataError naming every bad task (and annotation) with its fix; nothing is committed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from star.annotation.answers import AnswerRow, Problems, annotator_problem, answer_fix, answer_problem
from star.annotation.commit import check_import, commit_import
from star.annotation.labelstudio import ANSWER
from star.annotation.queries import OpenRound, open_round
from star.errors import DataError
from star.store.labels import Label

DEFAULT_LS_ANNOTATOR = "label-studio"
_EXPORT_HINT = "export the project from Label Studio in its 'JSON' format (Export > JSON), not JSON-MIN or CSV"
_RETRY = "fix it in Label Studio and export (or pull) again"


@dataclass
class ImportReport:
    """What one import did: labels committed, and the tasks it left alone (and why)."""

    round_index: int
    committed: int = 0
    already: int = 0
    unanswered: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    earlier: int = 0


class ExportProblems(Problems):
    """Problems of one export, each named by its task (position, Label Studio id, star id) and annotation."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.where: dict[int, str] = {}

    def add(self, line: int, what: str, fix: str) -> None:
        """Record what is wrong with task number `line` and how to fix it."""
        self.items.append((line, f"{self.path}: {self.where.get(line, f'task #{line}')}: {what}; {fix}"))

    def raise_if_any(self) -> None:
        """One DataError listing every problem, with the hint for Label Studio exports."""
        try:
            super().raise_if_any()
        except DataError as e:
            raise DataError(e.message, hint="fix them in Label Studio and export (or pull) again; nothing was "
                                            "imported, so the whole export can be imported again") from None


def read_export(path: str | Path) -> list[Any]:
    """The list of tasks of a Label Studio JSON export; DataError when the file is not one."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        what = "does not exist" if not p.exists() else f"cannot be read: {e.strerror or e}"
        raise DataError(f"Label Studio export {p} {what}", hint=_EXPORT_HINT) from None
    try:
        tasks = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: byte {data[e.start]:#04x} at offset {e.start} is not valid UTF-8 (nothing was imported)",
                        hint=_EXPORT_HINT) from None
    except (json.JSONDecodeError, RecursionError) as e:
        where = f" at line {e.lineno} column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else ""
        raise DataError(f"{p} is not valid JSON{where} (nothing was imported)", hint=_EXPORT_HINT) from None
    if not isinstance(tasks, list):
        raise DataError(f"{p} holds a JSON {type(tasks).__name__}, not a list of tasks (nothing was imported)",
                        hint=_EXPORT_HINT)
    if not tasks:
        raise DataError(f"{p} holds no tasks (nothing was imported)",
                        hint="import tasks.json from `star labelstudio export` into the project, annotate, export")
    return tasks


def annotation_answer(annotation: dict[str, Any]) -> tuple[str | None, str | None]:
    """(answer, None) given through the `answer` control, or (None, what is wrong)."""
    result = annotation.get("result")
    if not isinstance(result, list):
        return None, "has no 'result' list"
    given = [r for r in result if isinstance(r, dict) and r.get("from_name") == ANSWER]
    if not given:
        return None, f"has no answer (no result from the '{ANSWER}' control)"
    if len(given) > 1:
        return None, f"gives {len(given)} answers"
    value = given[0].get("value")
    values = value.get("choices", value.get("text")) if isinstance(value, dict) else None
    if not isinstance(values, list) or len(values) != 1 or not isinstance(values[0], str):
        return None, f"must give exactly one answer, got {values!r:.60}"
    return values[0], None


def _where(n: int, entry: Any) -> str:
    """How an error names task number n: its position and, when known, its Label Studio and star ids."""
    if not isinstance(entry, dict):
        return f"task #{n}"
    data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
    ids = [f"Label Studio id {entry['id']}"] if "id" in entry else []
    ids += [f"star id {data['star_id']!r:.80}"] if "star_id" in data else []
    return f"task #{n}" + (f" ({', '.join(ids)})" if ids else "")


def _given_answers(open_: OpenRound, n: int, entry: dict[str, Any], problems: ExportProblems,
                   report: ImportReport) -> list[str] | None:
    """The valid answers of a task's kept annotations ([] when none); None after a problem."""
    annotations = entry["annotations"]
    kept = [a for a in annotations if not (isinstance(a, dict) and a.get("was_cancelled"))]
    if not kept:
        (report.skipped if annotations else report.unanswered).append(entry["data"].get("star_id"))
        return []
    answers = []
    for a in kept:
        name = f"annotation {a.get('id', '?')}" if isinstance(a, dict) else "an annotation"
        answer, what = annotation_answer(a) if isinstance(a, dict) else (None, "is not a JSON object")
        if answer is None:
            problems.add(n, f"{name} {what}", f"{answer_fix(open_.task)} in Label Studio (or skip the task), "
                                              "then export (or pull) again")
            return None
        if (what := answer_problem(open_.task, answer)) is not None:
            problems.add(n, f"{name}: {what}", f"{answer_fix(open_.task)}; {_RETRY}")
            return None
        answers.append((a.get("id", "?"), answer))
    canonical = {open_.task.gold_answer(answer) for _, answer in answers}
    if len(canonical) > 1:
        given = ", ".join(f"{answer!r:.40} (annotation {i})" for i, answer in answers)
        problems.add(n, f"its annotations disagree: {given}", "keep one answer: fix or delete the others in Label "
                     "Studio, then export (or pull) again")
        return None
    return [answer for _, answer in answers]


def _star_ids(n: int, entry: Any, problems: ExportProblems) -> tuple[str, int] | None:
    """(star_id, star_round) of a well-formed exported task; None after a problem."""
    if not isinstance(entry, dict) or not isinstance(entry.get("data"), dict) \
            or not isinstance(entry.get("annotations"), list):
        problems.add(n, "is not a Label Studio task with 'data' and an 'annotations' list", _EXPORT_HINT)
        return None
    star_id, round_ = entry["data"].get("star_id"), entry["data"].get("star_round")
    if not isinstance(star_id, str) or not star_id.strip() or isinstance(round_, bool) or not isinstance(round_, int):
        problems.add(n, "has no star_id and star_round in its data: it is not a task star exported",
                     "import the tasks.json of `star labelstudio export` into the project (or use `star labelstudio "
                     "push`), and delete other tasks")
        return None
    return star_id, round_


def _known_item(open_: OpenRound, n: int, star_id: str, data: dict[str, Any], problems: ExportProblems) -> bool:
    """True when `star_id` is an item of the open round's query with the same question."""
    item = next((r for r in open_.items if r["id"] == star_id), None)
    if item is None:
        problems.add(n, f"star id {star_id!r:.80} is not in round {open_.index}'s query ({open_.query_path})",
                     f"delete the task from the project, or import the export into the run it came from; {_RETRY}")
        return False
    if data.get("question") != item.get("question"):
        problems.add(n, f"its question differs from the one round {open_.index}'s query holds for {star_id!r}",
                     "this export comes from another run: import it into the run it came from")
        return False
    return True


def _task_row(open_: OpenRound, n: int, entry: Any, labelled: dict[str, Label], seen: dict[str, int],
              problems: ExportProblems, report: ImportReport) -> AnswerRow | None:
    """The answer row of exported task number n, or None (nothing to import, or a problem recorded)."""
    problems.where[n] = _where(n, entry)
    if (ids := _star_ids(n, entry, problems)) is None:
        return None
    star_id, round_ = ids
    if round_ < open_.index:
        report.earlier += 1
        return None
    answers = _given_answers(open_, n, entry, problems, report)
    if not answers or not _known_item(open_, n, star_id, entry["data"], problems):
        return None
    if star_id in seen:
        problems.add(n, f"star id {star_id!r} is annotated in task #{seen[star_id]} too",
                     f"annotate each item in one task: delete the other task (or its annotations); {_RETRY}")
        return None
    seen[star_id] = n
    if (lab := labelled.get(star_id)) is None:
        return AnswerRow(n, star_id, answers[0])
    if open_.task.gold_answer(lab.answer) == open_.task.gold_answer(answers[0]):
        report.already += 1
        return None
    problems.add(n, f"star id {star_id!r} already has the label {lab.answer!r:.40} (by {lab.annotator}), the "
                 f"annotation says {answers[0]!r:.40}", "a committed label is never overwritten by an import: "
                 f"change it with `star label {open_.run.path} FILE --correct`, or restore the annotation")
    return None


def import_labelstudio(run_dir: str | Path, file: str | Path, annotator: str = DEFAULT_LS_ANNOTATOR) -> ImportReport:
    """Import a Label Studio JSON export into the open round, all or nothing (see the module's rules)."""
    open_ = open_round(run_dir)
    if (problem := annotator_problem(annotator)) is not None:
        raise DataError(problem, hint="pass --annotator NAME")
    entries = read_export(file)
    problems, report, labelled, seen = ExportProblems(Path(file)), ImportReport(open_.index), open_.labels(), {}
    rows = [row for n, entry in enumerate(entries, 1)
            if (row := _task_row(open_, n, entry, labelled, seen, problems, report)) is not None]
    check_import(open_, rows, problems, labelled, answer_suffix=f"; {_RETRY}")  # star label's checks, once more
    problems.raise_if_any()
    report.committed = commit_import(open_, rows, annotator) if rows else 0
    return report
