"""One writer per run: `star run` holds DIR/run.lock (an flock) for as long as it writes the run.

The lock is the kernel's (`fcntl.flock` on the open file), not the file's existence: it is
released when its holder exits, however it exits (kill -9 included), so a dead holder never
blocks a resume. The file names the holder (PID, host, start time, command) so that a refused
second writer can say who holds the run, and so that a lock left behind by a dead holder is
recognised ("stale") and said when it is taken over.

Which commands take it: `star run` (new and resumed runs) only, on the main process of a
multi-process run. `star label`, `star label --correct` and `star annotate` write the label
store alone (SQLite: one transaction per commit, busy timeouts), `star query` rewrites the
todo files atomically; they run safely next to each other and next to a run.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from star.errors import RunLockedError
from star.store.io import write_failed


def _holder() -> dict[str, Any]:
    """Who this process is: written into the lock file while it holds the lock."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["star", *sys.argv[1:]])[:300]}


def describe(holder: dict[str, Any]) -> str:
    """'pid 123 on host h since 2026-12-03 12:00:00 (star run ...)'."""
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


class RunLock:
    """DIR/run.lock, held exclusively while the block (or `acquire` ... `release`) runs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.stale: dict[str, Any] | None = None  # the dead holder whose lock was taken over, if any

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunLockedError naming the live holder. Never waits."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise write_failed(self.path, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            run = self.path.parent
            raise RunLockedError(f"{run} is being written by another process: {describe(holder)}",
                                 hint="wait for it to end, or stop it; two runs writing one directory would undo each "
                                      "other's work (`star label` and `star annotate` may run next to it)") from None
        self.stale = _read(fd) or None  # a holder's record, but no holder: it died without releasing
        try:
            _write(fd, _holder())
        except OSError as e:
            os.close(fd)
            raise write_failed(self.path, e) from e
        self._fd = fd
        return self

    def release(self) -> None:
        """Clear the holder's record and let go (also done by the kernel when the process exits)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # the lock is released by close below all the same; the record then reads as stale
        finally:
            os.close(fd)

    def __del__(self) -> None:  # a holder dropped without release (e.g. a setup that failed): let go
        self.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    """The holder record in the lock file (empty when there is none or it is unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, holder: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
    os.fsync(fd)
