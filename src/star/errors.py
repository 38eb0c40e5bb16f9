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
