"""Rows of CSV files and JSON-array files, read with the standard library, and text from typed columns.

CSV is read with `csv` rather than through `datasets` (pandas): that reader would silently drop the
extra field of a row with a stray comma, or take it for an index column. Here every row must have the
header's number of fields, every value stays text, and a row is numbered by the line it starts on
(the header is line 1), as a spreadsheet numbers it. A JSON-array file's rows are numbered from 1.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from star.errors import DataError

Records = list[tuple[int, dict[str, Any]]]
_CSV_HINT = 'the first line names the columns; quote a value that holds a comma or a line break: "a, b"'
_JSON_HINT = 'write one array of objects, [{"question": "...", "answer": "..."}, ...], or one object a line in a .jsonl file'


def must_exist(path: Path) -> None:
    """A DataError for a missing path or a folder, as the JSON-lines reader says it."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist", hint="create it, or set task.path to the file or folder that holds it")
    if not path.is_file():
        raise DataError(f"data file {path} is not a file", hint="point task.path at a data file or a folder of them")


def _text(path: Path) -> str:
    """The file's text (a UTF-8 BOM dropped); a non-UTF-8 byte is reported with its line."""
    must_exist(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"data file {path} cannot be read: {e.strerror or e}", hint="check its permissions") from None
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}:{line}: byte {raw[e.start]:#04x} is not valid UTF-8",
                        hint="save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None


def _check_header(path: Path, header: list[str]) -> None:
    """Column names must be present, non-blank and distinct."""
    if any(not name.strip() for name in header):
        raise DataError(f"{path}:1: the header has a blank column name ({header!r:.120})", hint=_CSV_HINT)
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}:1: the header names column {name!r} twice", hint="give every column its own name")
        seen.add(name)


def _csv_rows(path: Path, reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, fields) for each row; a malformed row names that line."""
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"{path}:{start}: not well-formed CSV: {e}", hint=_CSV_HINT) from None
        yield start, row
        start = reader.line_num + 1


def read_csv(path: str | Path) -> Records:
    """(line the row starts on, row) for every data row of a CSV file with a header line; one DataError otherwise."""
    p = Path(path)
    reader = csv.reader(io.StringIO(_text(p), newline=""), strict=True)
    rows = _csv_rows(p, reader)
    header = next(rows, (0, None))[1]
    if header is None:
        raise DataError(f"data file {p} is empty (no header, no rows)", hint=_CSV_HINT)
    _check_header(p, header)
    records = []
    for number, row in rows:
        if not row:  # a blank line
            continue
        if len(row) != len(header):
            raise DataError(f"{p}:{number}: the row has {len(row)} fields and the header {len(header)}"
                            f" ({', '.join(header)})", hint=_CSV_HINT)
        records.append((number, dict(zip(header, row))))
    if not records:
        raise DataError(f"data file {p} is empty (a header and no rows)", hint=_CSV_HINT)
    return records


def read_json_array(path: str | Path) -> Records:
    """(1-based row, object) for every element of a file holding one JSON array of objects."""
    p = Path(path)
    text = _text(p)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}: malformed JSON at column {e.colno}: {e.msg}", hint=_JSON_HINT) from None
    except RecursionError:
        raise DataError(f"{p}: JSON nested too deeply", hint=_JSON_HINT) from None
    if not isinstance(data, list):
        raise DataError(f"{p}: expected a JSON array of objects, got {type(data).__name__}", hint=_JSON_HINT)
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise DataError(f"{p}, row {number}: expected a JSON object, got {type(item).__name__}", hint=_JSON_HINT)
    if not data:
        raise DataError(f"data file {p} is empty (an empty array)", hint=_JSON_HINT)
    return list(enumerate(data, start=1))


def text_value(where: str, row: dict[str, Any], name: str, option: str) -> str:
    """Column `name` of a typed row (Parquet, Arrow) as text: numbers and booleans spelled out, null refused.

    `option` is the setting that chose the column (e.g. 'task.answer_field'), named in the fix.
    """
    if name not in row:
        columns = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"{where}: missing column {name!r} (columns: {columns})",
                        hint=f"set {option} to the column that holds it")
    value = row[name]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError(f"{where}: column {name!r} is empty (null)", hint="fill it in, or remove the row")
    if isinstance(value, (bool, int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise DataError(f"{where}: column {name!r} holds a {type(value).__name__}, not text: {value!r:.60}",
                        hint=f"set {option} to a text column, or build the question with task.prompt_template,"
                             f" e.g. '{{{name}[0]}}'")
    if not value.strip():
        raise DataError(f"{where}: column {name!r} is empty", hint="fill it in, or remove the row")
    return value
