"""Task data on disk: robust JSON-lines reading, seeded caps, and the base of file-backed tasks.

Every problem with a data file raises one `DataError` naming the file, the line (or row) and the fix,
so a bad dataset fails before any model is loaded. Where the rows come from (files of other types,
save_to_disk folders, the Hub) is star.tasks.sources.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from star.config import TaskConfig
from star.errors import DataError
from star.store.io import MAX_LINE_BYTES, LineTooLong, capped_lines
from star.tasks.base import Example, Split, Task
from star.tasks.sources import Rows, Source, SplitRef, hold_out
from star.tasks.tables import text_value
from star.tasks.template import PromptTemplate

#: The file each split is read from, inside a `task.path` folder, by default (see star.tasks.sources).
SPLIT_FILES: dict[str, str] = {"pool": "train.jsonl", "test": "test.jsonl"}
_FORMAT_HINT = 'each line must be one JSON object such as {"question": "...", "answer": "..."}'

T = TypeVar("T")


def _decode(path: Path, number: int, raw: bytes) -> str:
    """One raw line (BOM already dropped) as text; a non-UTF-8 byte is reported with its line and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}:{number}: byte {raw[e.start]:#04x} at column {e.start + 1} is not valid UTF-8",
            hint="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
        ) from None


def _parse(path: Path, number: int, text: str) -> dict[str, Any]:
    """One line as a JSON object, or a DataError saying what is wrong with it."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{number}: malformed JSON at column {e.colno}: {e.msg}", hint=_FORMAT_HINT) from None
    except RecursionError:
        raise DataError(f"{path}:{number}: JSON nested too deeply", hint=_FORMAT_HINT) from None
    if not isinstance(record, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}", hint=_FORMAT_HINT)
    return record


def check_fields(where: str, record: dict[str, Any], required: Sequence[str]) -> None:
    """Each required field must be present and a non-empty string; `where` ('file:line') prefixes the error."""
    for name in required:
        if name not in record:
            found = ", ".join(sorted(record)) or "none"
            raise DataError(
                f"{where}: missing field {name!r} (fields found: {found})",
                hint=f"add a {name!r} string to every line, or point the task at the field that holds it",
            )
        value = record[name]
        if not isinstance(value, str):
            raise DataError(
                f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r:.60}",
                hint=f'make it a JSON string, e.g. "{name}": "{str(value)[:40]}"',
            )
        if not value.strip():
            raise DataError(f"{where}: field {name!r} is empty", hint="fill it in or remove the line")


def _raw_lines(path: Path) -> list[tuple[int, bytes]]:
    """(line number, bytes without the line break, BOM dropped) for every line, refusing huge ones."""
    try:
        return list(capped_lines(path, MAX_LINE_BYTES))
    except LineTooLong as e:
        raise DataError(
            f"{path}:{e.number}: line is longer than {MAX_LINE_BYTES} bytes",
            hint="this is not a JSON-lines file, or one record is far too large; put one record a line",
        ) from None


def read_records(path: str | Path, required_fields: Sequence[str] = ()) -> list[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line, each with the required string fields."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist", hint="create it, or set task.path to the folder that holds it")
    if not p.is_file():
        raise DataError(f"data file {p} is not a file", hint="point task.path at the folder holding the .jsonl files")
    try:
        raw_lines = _raw_lines(p)
    except OSError as e:
        raise DataError(f"data file {p} cannot be read: {e.strerror or e}", hint="check its permissions") from None
    records = []
    for number, raw in raw_lines:
        text = _decode(p, number, raw)
        if not text.strip():
            continue
        record = _parse(p, number, text)
        check_fields(f"{p}:{number}", record, required_fields)
        records.append((number, record))
    if not records:
        raise DataError(f"data file {p} is empty (no records)", hint=_FORMAT_HINT)
    return records


def sample_split(records: Sequence[T], n: int, seed: int) -> list[T]:
    """A seeded random subsample of min(n, len) records, kept in file order (for size caps)."""
    if n >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), max(n, 0)))
    return [records[i] for i in keep]


class FileTask(Task):
    """A task whose data is read from `task.path` or `task.hub` (star.tasks.sources): a pool and a test split.

    Sizes are caps applied by `sample_split` with `task.seed` (a held-out test set is exactly
    `task.test_size` rows); every row is checked at load (fields, `task.prompt_template`,
    `check_label`), so a bad one is reported with its file and line or row.
    """

    id_prefix: str = "task"

    def __init__(self, config: TaskConfig) -> None:
        self.source = Source(config)
        self.sizes = {"pool": config.pool_size, "test": config.test_size}
        self.seed = config.seed
        self.question_field = config.question_field
        self.answer_field = config.answer_field
        self.template = PromptTemplate(config.prompt_template) if config.prompt_template else None
        self._cache: dict[str, list[Example]] = {}

    def load(self, split: Split) -> list[Example]:
        if split not in self._cache:
            pool_ref, test_ref = self.source.splits()
            if test_ref is None:
                test, rest = hold_out(self._read(pool_ref), self.sizes["test"], self.seed, pool_ref.label)
                self._cache.update(pool=sample_split(rest, self.sizes["pool"], self.seed), test=test)
            else:
                ref = pool_ref if split == "pool" else test_ref
                self._cache[split] = sample_split(self._read(ref), self.sizes[split], self.seed)
        return list(self._cache[split])

    def _rows(self, ref: SplitRef) -> Rows:
        """The split's rows; JSON lines are read here, each line checked as it is read."""
        if ref.kind != "jsonl":
            return self.source.rows(ref)
        required = [self.answer_field] if self.template else [self.question_field, self.answer_field]
        return Rows(ref, read_records(ref.location, required), typed=False)

    def _read(self, ref: SplitRef) -> list[Example]:
        """All examples of a split, fields and labels validated, in file order."""
        rows = self._rows(ref)
        return [self._example(rows, number, record) for number, record in rows.records]

    def _texts(self, where: str, record: dict[str, Any], typed: bool) -> tuple[str, str]:
        """(question, answer) of one row: the question from `task.prompt_template` or the question field."""
        fields = [self.answer_field] if self.template else [self.question_field, self.answer_field]
        if typed:
            options = {self.question_field: "task.question_field", self.answer_field: "task.answer_field"}
            values = {name: text_value(where, record, name, options[name]) for name in fields}
        else:
            check_fields(where, record, fields)
            values = {name: record[name] for name in fields}
        question = self.template.render(record, where) if self.template else values[self.question_field]
        return question, values[self.answer_field]

    def _example(self, rows: Rows, number: int, record: dict[str, Any]) -> Example:
        """One row as an Example with id '<prefix>-<stem>-<line or row>', its label checked."""
        where = rows.at(number)
        question, answer = self._texts(where, record, rows.typed)
        problem = self.check_label(answer)
        if problem is not None:
            raise DataError(
                f"{where}: field {self.answer_field!r} = {answer!r:.80} is not a valid {self.name} answer: {problem}",
                hint=self.label_hint(),
            )
        meta = {"line" if rows.ref.by_line else "row": number, "file": rows.ref.label}
        return Example(f"{self.id_prefix}-{rows.ref.stem}-{number}", question, answer, meta)

    def label_hint(self) -> str:
        """How to fix a label that `check_label` rejects."""
        return "fix the answer on that line, or remove the line"
