"""Give the C allocator's free memory back to the operating system between batches (glibc's `malloc_trim`).

Torch's CPU tensors come from glibc malloc. Batches of changing shapes (length buckets, rows leaving a
decoding batch) free blocks that later requests of other sizes cannot reuse, and glibc keeps those freed
pages resident: scoring 10,000 candidates with the pool unsubsampled peaked at 1,411 MB RSS against 522
MB for 1,000 (tiny model), though no tensor outlived its batch. Trimming after each batch returns the
free pages; it costs well under a millisecond on such a heap. Where glibc is absent (macOS, musl) it does
nothing. A fixed `MALLOC_MMAP_THRESHOLD_` also flattened the curve, but made the embedded model's
decoding 1.75x slower (every large temporary a fresh mmap), so it is not used.

Trimming after *every* batch made the training that follows a scoring phase about 20% slower on an
Intel Xeon and 11% on an AMD EPYC (bench/train_after_scoring.py: the returned pages are faulted in again). So batches trim
through a `TrimGuard`: only once the resident set has grown by `TRIM_SLACK_BYTES` since the phase
began or since the last trim. Memory stays bounded (a phase holds at most that much freed heap), and
a run whose heap does not grow that far never trims.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable

#: Growth of the resident set (bytes) since a phase began or since the last trim that makes a batch trim.
TRIM_SLACK_BYTES = 256 << 20
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> None:
    """Return free heap pages to the OS (glibc); a no-op elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def resident_bytes() -> int | None:
    """This process's resident set size in bytes (Linux's /proc/self/statm); None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class TrimGuard:
    """Trims free heap pages (`release_free_memory`) after a batch only when the resident set has grown by
    more than `slack` bytes since the guard began (a phase) or since its last trim; where the resident set
    cannot be read, after every batch (the bound without the measure)."""

    def __init__(self, slack: int = TRIM_SLACK_BYTES) -> None:
        self.slack = slack
        self.trims = 0  # how many times this guard trimmed (for benches and tests)
        self._floor = resident_bytes()

    def after_batch(self) -> None:
        """Trim if the resident set grew past the slack (then measure the new floor)."""
        rss = resident_bytes()
        if rss is not None and self._floor is not None and rss - self._floor <= self.slack:
            return
        release_free_memory()
        self.trims += 1
        self._floor = resident_bytes()
