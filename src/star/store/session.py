"""A run taken for writing: the run lock held, a resumed directory recovered, a new one started whole.

`star run` (the main process of a multi-process run) calls `resume_run` before it loads the
model, so that a second writer is refused at once, or `start_run` once the model has loaded
(a failed start leaves no half-made run behind). Both return the held `RunLock`; the caller
releases it when the run ends (the kernel does, if the process dies).
"""

from __future__ import annotations

import sys

from star.store.io import write_failed
from star.store.lock import RunLock, describe
from star.store.recovery import recover
from star.store.runs import RunDir


def note(message: str) -> None:
    """One line on stderr about the run directory's state."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def _take(run: RunDir) -> RunLock:
    lock = RunLock(run.lock_path).acquire()
    if lock.stale:
        note(f"{run.lock_path} was left by {describe(lock.stale)}, which is no longer running; taken over")
    return lock


def resume_run(run: RunDir) -> RunLock:
    """Lock an existing run and make it safe to resume (`recovery.recover`), saying what it found."""
    lock = _take(run)
    try:
        recover(run, note)
    except BaseException:
        lock.release()
        raise
    return lock


def start_run(path: str, config_text: str) -> tuple[RunDir, RunLock]:
    """Create a new run directory, lock it, and write its config.yaml (atomically, with its end line)."""
    RunDir.refuse_existing(path)
    run = RunDir(path)
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_failed(run.path, e) from e
    lock = _take(run)
    try:
        RunDir.refuse_existing(path)  # another start may have won the race for this folder
        run.write_config(config_text)
    except BaseException:
        lock.release()
        raise
    return run, lock
