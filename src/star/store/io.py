"""Files that are never seen half-written (atomic writes, JSON and JSON lines), append-only JSON lines,
and a capped line reader.

An append-only file (`append_jsonl`) grows by whole lines, so a round's cost does not grow with
what earlier rounds wrote; a kill can tear only its last line, which `read_appended_jsonl` drops.

`capped_lines` is the one reader of untrusted line files (task data, answers files): it refuses
huge lines before reading them whole and drops a UTF-8 BOM; each caller words its own error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from star.errors import StorageError

#: Longest accepted line, in bytes; a longer one is almost surely not a JSON-lines record.
MAX_LINE_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
#: How temp files of atomic writes end (a kill can leave one; `RunDir.remove_temporaries` clears them).
TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write `path` whole or not at all: a temp file beside it, fsync, rename over it, fsync the folder.

    Readers see the old file or the new one, never half of one, also after a kill or a power
    loss. A failed write (disk full, no permission) removes the temp file, leaves `path` as it
    was, and raises StorageError naming the file.
    """
    path = Path(path)
    data = text.encode("utf-8") if isinstance(text, str) else text
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666: the umask applies, as for open()
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:  # also an interrupt: no temp file is left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise write_failed(path, e) from e
        raise


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` at fd's position (os.write may write less than asked), then fsync."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def temp_path(path: Path) -> Path:
    """A hidden temp name beside `path`, unique to this process and call: `.NAME.<pid>.<random>.tmp`."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def temp_owner(path: Path) -> int | None:
    """The PID in a temp name from `temp_path` (or `save_adapter`'s folder), else None."""
    parts = path.name.split(".")
    if not path.name.endswith(TEMP_SUFFIX) or len(parts) < 4 or not parts[-3].isdigit():
        return None
    return int(parts[-3])


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):  # file systems without directory fsync
            raise
    finally:
        os.close(fd)


def write_failed(path: Path, error: BaseException) -> StorageError:
    """The StorageError for a failed write of `path`: what failed, and the fix (free space, then resume)."""
    reason = getattr(error, "strerror", None) or str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        hint = "free disk space, then run the command again (a run continues with `star run --resume DIR`)"
    else:
        hint = "check the folder's space and permissions, then run the command again (a run: `star run --resume DIR`)"
    return StorageError(f"could not write {path}: {reason}; nothing was changed by this write", hint=hint)


def write_json(path: Path, data: Any) -> None:
    """`data` as indented JSON, atomically."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line, atomically."""
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append one JSON object a line to `path` and fsync; cost O(rows), not O(file).

    A torn last line left by a kill is cut first, so the new rows start on a line of their own.
    A failed write (disk full) leaves the file as it was (absent, if it was new) and raises StorageError.
    """
    path = Path(path)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
    new = not path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            size = _whole_lines_size(fd)
            os.ftruncate(fd, size)
            try:
                os.lseek(fd, size, os.SEEK_SET)
                _write_all(fd, data)
            except BaseException:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if new:
            fsync_dir(path.parent)
    except BaseException as e:
        if new:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(e, OSError):
            raise write_failed(path, e) from e
        raise


def _whole_lines_size(fd: int) -> int:
    """Bytes of an open file up to and including its last line break (0 if it has none)."""
    pos = os.lseek(fd, 0, os.SEEK_END)
    while pos > 0:
        step = min(pos, 1 << 16)
        os.lseek(fd, pos - step, os.SEEK_SET)
        chunk = os.read(fd, step)
        if (i := chunk.rfind(b"\n")) >= 0:
            return pos - step + i + 1
        pos -= step
    return 0


def read_appended_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of an `append_jsonl` file; a torn last line (no line break: a kill mid-append) is dropped."""
    text = path.read_text(encoding="utf-8")
    whole = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


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
