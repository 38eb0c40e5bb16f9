"""Task data on disk: robust JSON-lines reading, seeded caps, and the base of file-backed tasks.

Every problem with a data file raises one `DataError` naming the file, the line and the fix,
so a bad dataset fails before any model is loaded.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from star.config import TaskConfig
from star.errors import ConfigError, DataError
from star.store.io import MAX_LINE_BYTES, LineTooLong, capped_lines
from star.tasks.base import Example, Split, Task

#: The file each split is read from, inside `task.path`.
SPLIT_FILES: dict[str, str] = {"pool": "train.jsonl", "test": "test.jsonl"}
_EXAMPLE_FOLDERS = {"gsm8k": "GSM8K", "boolq": "BoolQ", "obqa": "OBQA"}
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


def _check_fields(path: Path, number: int, record: dict[str, Any], required: Sequence[str]) -> None:
    """Each required field must be present and a non-empty string."""
    for name in required:
        if name not in record:
            found = ", ".join(sorted(record)) or "none"
            raise DataError(
                f"{path}:{number}: missing field {name!r} (fields found: {found})",
                hint=f"add a {name!r} string to every line, or point the task at the field that holds it",
            )
        value = record[name]
        if not isinstance(value, str):
            raise DataError(
                f"{path}:{number}: field {name!r} must be a string, got {type(value).__name__} {value!r:.60}",
                hint=f'make it a JSON string, e.g. "{name}": "{str(value)[:40]}"',
            )
        if not value.strip():
            raise DataError(f"{path}:{number}: field {name!r} is empty", hint="fill it in or remove the line")


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
        _check_fields(p, number, record, required_fields)
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


def data_folder(config: TaskConfig) -> Path:
    """`task.path` as an existing folder, or a ConfigError saying how to set it."""
    folder_name = _EXAMPLE_FOLDERS.get(config.name, "my_data")
    fix = f"set it to the folder with train.jsonl and test.jsonl, e.g. task.path=../shared/datasets/{folder_name}"
    if not config.path:
        raise ConfigError(f"task.name={config.name!r} needs task.path", hint=fix)
    folder = Path(config.path).expanduser()
    if not folder.exists():
        raise ConfigError(f"task.path={config.path!r} does not exist", hint=fix)
    if not folder.is_dir():
        raise ConfigError(f"task.path={config.path!r} is not a folder", hint=fix)
    return folder


class FileTask(Task):
    """A task read from `<task.path>/train.jsonl` (the pool) and `<task.path>/test.jsonl` (the test set).

    Sizes are caps applied by `sample_split` with `task.seed`; every label of a file is checked
    with `check_label` at load so a bad answer is reported with its file and line.
    """

    id_prefix: str = "task"

    def __init__(self, config: TaskConfig) -> None:
        self.folder = data_folder(config)
        self.sizes = {"pool": config.pool_size, "test": config.test_size}
        self.seed = config.seed
        self.question_field = "question"
        self.answer_field = "answer"
        self._cache: dict[str, list[Example]] = {}

    def split_path(self, split: Split) -> Path:
        """The file a split is read from."""
        return self.folder / SPLIT_FILES[split]

    def load(self, split: Split) -> list[Example]:
        if split not in self._cache:
            self._cache[split] = self._read(split)
        return list(self._cache[split])

    def _read(self, split: Split) -> list[Example]:
        """All examples of a split's file, labels validated, then capped."""
        path = self.split_path(split)
        stem = Path(SPLIT_FILES[split]).stem
        examples = []
        for number, record in read_records(path, [self.question_field, self.answer_field]):
            answer = record[self.answer_field]
            problem = self.check_label(answer)
            if problem is not None:
                raise DataError(
                    f"{path}:{number}: field {self.answer_field!r} = {answer!r:.80} is not a valid {self.name} answer: {problem}",
                    hint=self.label_hint(),
                )
            meta = {"line": number, "file": str(path)}
            examples.append(Example(f"{self.id_prefix}-{stem}-{number}", record[self.question_field], answer, meta))
        return sample_split(examples, self.sizes[split], self.seed)

    def label_hint(self) -> str:
        """How to fix a label that `check_label` rejects."""
        return "fix the answer on that line, or remove the line"
