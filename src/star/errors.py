"""The exception hierarchy: every user-facing failure is a StarError with a hint."""

from __future__ import annotations


class StarError(Exception):
    """Base of every error `star` raises on purpose; the CLI prints it without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ConfigError(StarError):
    """The run configuration (file, overrides or API arguments) is invalid."""


class DataError(StarError):
    """A data file (task data, labels, answers) is missing or malformed."""


class ModelLoadError(StarError):
    """The model or tokenizer could not be loaded."""


class PoolExhaustedError(StarError):
    """The unlabelled pool has fewer examples than a query asks for."""


class RunStateError(StarError):
    """A run directory is missing, incomplete or inconsistent."""


class StorageError(StarError):
    """A file of the run, or the label store, could not be written (disk full, no permission, I/O error).

    The write is undone: the file (or the store) is as it was before it, so a resume continues.
    """


class RunLockedError(RunStateError):
    """Another process is writing the run (it holds the run's lock file)."""


class StoreBusyError(StarError):
    """The label store stayed locked by another writer longer than the busy timeout."""


class RunInterrupted(StarError):
    """The run stopped on a signal (SIGTERM, SIGINT) at a safe point; `signum` is the signal's number.

    Every write is atomic, so what was written is whole; `star run --resume DIR` continues.
    """

    def __init__(self, message: str, signum: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by that signal."""
        return 128 + self.signum
