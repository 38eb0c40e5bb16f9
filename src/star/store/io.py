"""Files that are never seen half-written (atomic writes, JSON and JSON lines), and a capped line reader.

`capped_lines` is the one reader of untrusted line files (task data, answers files): it refuses
huge lines before reading them whole and drops a UTF-8 BOM; each caller words its own error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: Longest accepted line, in bytes; a longer one is almost surely not a JSON-lines record.
MAX_LINE_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


def atomic_write(path: Path, text: str) -> None:
    """Write via a temp file + fsync + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON, atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line, atomically."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_json(path: Path) -> Any:
    """The JSON value in `path`."""
    return json.loads(path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, blank lines skipped."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class LineTooLong(Exception):
    """A line longer than the cap `capped_lines` was given; `number` is its 1-based line number."""

    def __init__(self, number: int, max_bytes: int) -> None:
        super().__init__(f"line {number} is longer than {max_bytes} bytes")
        self.number = number
        self.max_bytes = max_bytes


def capped_lines(path: Path, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes without the line break) of every line, the UTF-8 BOM dropped from line 1.

    A line over `max_bytes` (BOM included) raises `LineTooLong` without being read whole.
    """
    with path.open("rb") as f:
        number = 0
        while raw := f.readline(max_bytes + 2):
            number += 1
            raw = raw.rstrip(b"\r\n")
            if len(raw) > max_bytes:
                raise LineTooLong(number, max_bytes)
            yield number, raw[len(_BOM):] if number == 1 and raw.startswith(_BOM) else raw
