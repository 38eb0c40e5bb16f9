"""People in the loop: export a round's query, import answers all-or-nothing, find the open round.

When `al.annotator` is `human`, the loop stops after selecting a round and `HumanAnnotator`
writes the batch to answer:

    DIR/round-<t>/query.jsonl, query.csv   the whole batch: id, question, suggestion, score, ...
    DIR/round-<t>/todo.jsonl, todo.csv     the items still without a label, with an empty `answer`

Answers come back through `import_labels` (`star label DIR FILE`) or the annotation page
(`star annotate DIR`); both commit to the run's label store with the round's index, and
`star run --resume DIR` trains once every item of the batch is labelled. A committed label is
final: the store never overwrites one, so no answer is ever lost or counted twice.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from star.config import RunConfig, load_stored_config
from star.errors import DataError, RunStateError
from star.store.io import atomic_write, read_jsonl, write_jsonl
from star.store.labels import Label, LabelStore
from star.store.runs import RunDir
from star.tasks import Task, build_task
from star.tasks.files import MAX_LINE_BYTES

if TYPE_CHECKING:
    from star.loop import Experiment

#: Columns of the exported CSV files, in order (todo files add `answer` after `suggestion`).
QUERY_COLUMNS = ("id", "question", "suggestion", "score", "round", "answer_type", "choices", "raw_output")
#: Problems listed in one import error; the rest are counted.
MAX_LISTED = 20
DEFAULT_ANNOTATOR = "human"
_ANSWERS_HINT = 'one JSON object a line, e.g. {"id": "pool-000003", "answer": "42"}, or a CSV file with columns id,answer'


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


# --- the annotator the loop calls --------------------------------------------------------------

class HumanAnnotator:
    """People label: the loop stops with the round's query written, and resumes once all are labelled."""

    name = "human"

    def __init__(self, exp: "Experiment | None" = None) -> None:
        self.exp = exp

    def acquire(self, exp: "Experiment", round_index: int, ids: Sequence[str]) -> list[str]:
        """Return the ids still unlabelled; when there are some, make sure the query files exist."""
        missing = [i for i in ids if exp.store.get(i) is None]
        if not missing:
            return []
        rows = _saved_query(batch_path(exp.run, round_index))
        if rows is None or [r["id"] for r in rows] != list(ids):
            rows = export_query(exp, round_index, ids)
        todo = set(missing)
        write_batch(exp.run, round_index, "todo", [r for r in rows if r["id"] in todo])
        _tell(exp.run, round_index, len(missing), len(ids))
        return missing


def _saved_query(path: Path) -> list[dict[str, Any]] | None:
    """The query already written for a round, or None when there is none (or it is damaged)."""
    if not path.is_file():
        return None
    try:
        return _read_query(path)
    except RunStateError:
        return None


def _tell(run: RunDir, t: int, missing: int, total: int) -> None:
    """Say, on stderr, that the run stopped for labels and how to give them."""
    print(f"round {t} waits for {missing} of {total} label(s); answer them with `star annotate {run.path}`, or fill "
          f"{batch_path(run, t, 'todo', 'csv')} and run `star label {run.path} FILE`; then `star run --resume {run.path}`",
          file=sys.stderr)


def export_query(exp: "Experiment", t: int, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Write round t's query (question, model t-1's suggestion, score) as JSONL and CSV; return its rows."""
    from star.engine.generation import generate
    from star.loop import load_live_adapter

    if t > 0:
        load_live_adapter(exp, t - 1)  # a resumed process starts with a fresh adapter: suggest with model t-1
    cfg, task = exp.config, exp.task
    position = {e.id: i for i, e in enumerate(exp.pool)}
    idx = [position[i] for i in ids]
    scores_file = exp.run.scores_path(t)
    scores = {r["id"]: r["score"] for r in read_jsonl(scores_file)} if scores_file.is_file() else {}
    gens = generate(exp.model.model, exp.model.tokenizer, [exp.pool_prompts[i] for i in idx], cfg.al.max_new_tokens,
                    cfg.al.batch_size, is_complete=task.answer_complete, desc="generate (suggestions)",
                    show_progress=exp.show_progress)
    rows = [query_row(task, t, exp.pool[i].id, exp.pool[i].question, g.text, scores.get(exp.pool[i].id))
            for i, g in zip(idx, gens)]
    write_batch(exp.run, t, "query", rows)
    return rows


def query_row(task: Task, t: int, example_id: str, question: str, output: str, score: float | None) -> dict[str, Any]:
    """One query item: the model's output and its extracted answer as the suggestion."""
    suggestion = output.strip() if task.answer_type == "text" else (task.extract(output) or "")
    return {"id": example_id, "question": question, "suggestion": suggestion, "score": score, "round": t,
            "answer_type": task.answer_type, "choices": list(task.choices) if task.choices else None,
            "raw_output": output}


def _read_query(path: Path) -> list[dict[str, Any]]:
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
    path = batch_path(run, t)
    if not path.is_file():
        if config.al.annotator != "human":
            hint = f"this run's al.annotator is {config.al.annotator!r}; start a run with al.annotator=human"
        else:
            hint = f"run `star run --resume {run.path}`: it selects round {t}, writes {path} and stops for labels"
        raise RunStateError(f"round {t} of {run.path} has no query to answer yet", hint=hint)
    return OpenRound(run, config, task, t, _read_query(path))


def write_todo(open_: OpenRound) -> tuple[Path, Path, int]:
    """Rewrite round-<t>/todo.{jsonl,csv} with the items still to answer; return paths and count."""
    rest = open_.remaining()
    jsonl, csv_path = write_batch(open_.run, open_.index, "todo", rest)
    return jsonl, csv_path, len(rest)


# --- checking one answer ---------------------------------------------------------------------

def answer_fix(task: Task) -> str:
    """How to write a valid answer for `task`."""
    if task.choices:
        return f"write one of {', '.join(task.choices)}"
    if task.answer_type == "number":
        return "write the final number, e.g. 42 (or a worked answer ending '#### 42')"
    return "write the answer text"


def answer_problem(task: Task, answer: Any) -> str | None:
    """None if `answer` is a valid label for `task`, else what is wrong with it."""
    if not isinstance(answer, str):
        return f"answer must be text, got {type(answer).__name__} {answer!r:.40}"
    if not answer.strip():
        return "answer is empty"
    if not _encodable(answer):
        return "answer holds a character that is not valid Unicode (a lone surrogate)"
    problem = task.check_label(answer)
    return None if problem is None else f"answer {answer!r:.80} is not a valid {task.name} answer: {problem}"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def annotator_problem(name: Any) -> str | None:
    """None if `name` is a usable annotator name (1-100 printable characters), else why not."""
    if not isinstance(name, str):
        return f"annotator must be text, got {type(name).__name__}"
    if not name.strip() or len(name) > 100 or not name.isprintable():
        return f"annotator {name!r:.40} must be 1-100 printable characters"
    return None


# --- reading an answers file -------------------------------------------------------------------

@dataclass
class AnswerRow:
    """One answer read from a file, not yet checked against the run."""

    line: int
    id: Any
    answer: Any
    annotator: Any = None


class _Problems:
    """Per-line problems of one answers file, turned into one DataError."""

    def __init__(self, path: Path) -> None:
        self.path, self.items = path, []

    def add(self, line: int, what: str, fix: str) -> None:
        """Record what is wrong on `line` and how to fix it."""
        self.items.append((line, f"{self.path}:{line}: {what}; {fix}"))

    def raise_if_any(self) -> None:
        """One DataError listing every problem in line order (the first MAX_LISTED of them)."""
        if not self.items:
            return
        self.items = [text for _, text in sorted(self.items, key=lambda x: x[0])]
        hint = "fix the file and run `star label` again; nothing was imported, so the whole file can be re-imported"
        if len(self.items) == 1:
            raise DataError(f"{self.items[0]} (nothing was imported)", hint=hint)
        shown = "\n  - ".join(self.items[:MAX_LISTED])
        more = f"\n  ... and {len(self.items) - MAX_LISTED} more" if len(self.items) > MAX_LISTED else ""
        raise DataError(f"{self.path}: {len(self.items)} problems, nothing was imported:\n  - {shown}{more}", hint=hint)


def _file_bytes_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without line break) of a file; a line over MAX_LINE_BYTES is a DataError."""
    with path.open("rb") as f:
        number = 0
        while raw := f.readline(MAX_LINE_BYTES + 2):
            number += 1
            raw = raw.rstrip(b"\r\n")
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(f"{path}:{number}: line is longer than {MAX_LINE_BYTES} bytes (nothing was imported)",
                                hint=f"an answers file holds {_ANSWERS_HINT}; split or shorten that line")
            yield number, raw[3:] if number == 1 and raw.startswith(b"\xef\xbb\xbf") else raw


def _jsonl_rows(path: Path, problems: _Problems) -> list[AnswerRow]:
    """Answer rows of a JSON-lines file; bad lines become problems."""
    rows = []
    for number, raw in _file_bytes_lines(path):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.add(number, f"byte {raw[e.start]:#04x} at column {e.start + 1} is not valid UTF-8",
                         "save the file as UTF-8")
            continue
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            where = f" at column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else ": nested too deeply"
            problems.add(number, f"malformed JSON{where}", f"write {_ANSWERS_HINT}")
            continue
        if not isinstance(record, dict):
            problems.add(number, f"expected a JSON object, got {type(record).__name__}", f"write {_ANSWERS_HINT}")
            continue
        rows.append(AnswerRow(number, record.get("id"), record.get("answer"), record.get("annotator")))
    return rows


def _csv_text_of(path: Path) -> str:
    """A CSV file's text after the line-length and UTF-8 checks (DataError naming line and column)."""
    data = b"\n".join(raw for _, raw in _file_bytes_lines(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}: byte {data[e.start]:#04x} at column {column} is not valid UTF-8 "
                        "(nothing was imported)", hint="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


def _csv_header(path: Path, reader: Any, problems: _Problems) -> list[str] | None:
    """The normalised header row (must hold id and answer), or None after a problem."""
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        header = [c.strip().lower() for c in cells]
        for name in ("id", "answer"):
            if name not in header:
                problems.add(reader.line_num, f"the header has no {name!r} column (columns: {', '.join(header)})",
                             "the first row must name the columns, e.g. id,answer")
                return None
        return header
    return None


def _csv_rows(path: Path, problems: _Problems) -> list[AnswerRow]:
    """Answer rows of a CSV file with a header naming `id` and `answer` (other columns ignored)."""
    reader = csv.reader(io.StringIO(_csv_text_of(path), newline=""), strict=True)
    rows: list[AnswerRow] = []
    try:
        header = _csv_header(path, reader, problems)
        start = reader.line_num + 1
        for cells in reader:
            if header is None:
                break
            if any(c.strip() for c in cells):
                record = dict(zip(header, cells))
                if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
                    problems.add(start, f"{len(cells)} values but the header names {len(header)} columns",
                                 "quote values that hold a comma")
                else:
                    rows.append(AnswerRow(start, record.get("id"), record.get("answer"), record.get("annotator") or None))
            start = reader.line_num + 1
    except csv.Error as e:
        problems.add(reader.line_num, f"malformed CSV: {e}", "check the quoting on that line")
    return rows


def read_answers(path: str | Path) -> tuple[list[AnswerRow], _Problems]:
    """Rows of an answers file (.csv by extension, else JSON lines) and its per-line problems."""
    p = Path(path)
    try:
        if not p.is_file():
            what = "is not a file" if p.exists() else "does not exist"
            raise DataError(f"answers file {p} {what}", hint=f"pass a file with {_ANSWERS_HINT}")
        problems = _Problems(p)
        rows = _csv_rows(p, problems) if p.suffix.lower() == ".csv" else _jsonl_rows(p, problems)
    except OSError as e:
        raise DataError(f"answers file {p} cannot be read: {e.strerror or e}", hint="check its permissions") from None
    except ValueError as e:  # e.g. a NUL in the path
        raise DataError(f"answers file {str(p)!r} is not a valid path: {e}", hint="check the file name") from None
    if not rows and not problems.items:
        raise DataError(f"answers file {p} is empty (no answers)", hint=f"write {_ANSWERS_HINT}")
    return rows, problems


# --- importing ---------------------------------------------------------------------------------

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


def _check_rows(task: Task, rows: Sequence[AnswerRow], problems: _Problems, id_fix: str,
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


def _one_annotator(rows: Sequence[AnswerRow], default: str, problems: _Problems) -> str:
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
    _check_rows(open_.task, rows, problems, f"give the id of an item in {open_.query_path}",
                _queried_unlabelled(open_, open_.labels()), answer_suffix=", or remove the line to answer it later")
    who = _one_annotator(rows, annotator, problems)
    problems.raise_if_any()
    store = LabelStore(open_.run.labels_path)
    try:
        store.add_many([(r.id, r.answer) for r in rows], who, open_.index)
    finally:
        store.close()
    return len(rows)


def _check_corrections(task: Task, rows: Sequence[AnswerRow], labelled: dict[str, Label], problems: _Problems) -> None:
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


__all__ = ["AlreadyLabelled", "HumanAnnotator", "OpenRound", "commit_answer", "correct_labels", "export_query", "import_labels",
           "open_round", "read_answers", "write_todo"]
