"""Answers files (JSON lines or CSV) read into rows, and the checks of one answer and one annotator name.

Every problem is collected per line (`Problems`) so one import reports all of them at once.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from star.errors import DataError
from star.store.io import MAX_LINE_BYTES, LineTooLong, capped_lines
from star.tasks import Task

#: Problems listed in one import error; the rest are counted.
MAX_LISTED = 20
_ANSWERS_HINT = 'one JSON object a line, e.g. {"id": "pool-000003", "answer": "42"}, or a CSV file with columns id,answer'


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



# --- reading an answers file -------------------------------------------------------------------

@dataclass
class AnswerRow:
    """One answer read from a file, not yet checked against the run."""

    line: int
    id: Any
    answer: Any
    annotator: Any = None


class Problems:
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
    """(line number, bytes without line break, BOM dropped) of a file; a line over MAX_LINE_BYTES is a DataError."""
    try:
        yield from capped_lines(path, MAX_LINE_BYTES)
    except LineTooLong as e:
        raise DataError(f"{path}:{e.number}: line is longer than {MAX_LINE_BYTES} bytes (nothing was imported)",
                        hint=f"an answers file holds {_ANSWERS_HINT}; split or shorten that line") from None


def _jsonl_rows(path: Path, problems: Problems) -> list[AnswerRow]:
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


def _csv_header(path: Path, reader: Any, problems: Problems) -> list[str] | None:
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


def _csv_rows(path: Path, problems: Problems) -> list[AnswerRow]:
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


def read_answers(path: str | Path) -> tuple[list[AnswerRow], Problems]:
    """Rows of an answers file (.csv by extension, else JSON lines) and its per-line problems."""
    p = Path(path)
    try:
        if not p.is_file():
            what = "is not a file" if p.exists() else "does not exist"
            raise DataError(f"answers file {p} {what}", hint=f"pass a file with {_ANSWERS_HINT}")
        problems = Problems(p)
        rows = _csv_rows(p, problems) if p.suffix.lower() == ".csv" else _jsonl_rows(p, problems)
    except OSError as e:
        raise DataError(f"answers file {p} cannot be read: {e.strerror or e}", hint="check its permissions") from None
    except ValueError as e:  # e.g. a NUL in the path
        raise DataError(f"answers file {str(p)!r} is not a valid path: {e}", hint="check the file name") from None
    if not rows and not problems.items:
        raise DataError(f"answers file {p} is empty (no answers)", hint=f"write {_ANSWERS_HINT}")
    return rows, problems
