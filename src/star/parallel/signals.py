"""SIGTERM and SIGINT during a run: stop where the process is, say where, and leave nothing half-written.

`stop_on_signals` turns the first SIGTERM or SIGINT into a `RunInterrupted` exception, raised
wherever the main thread is (Python runs signal handlers between bytecodes, so a C call such
as a matmul, an SQLite commit or a gloo collective finishes first). Inside the block it travels
as `_Stop`, a BaseException like KeyboardInterrupt, so that library code catching `Exception`
(jinja2 turned it into a TemplateSyntaxError while compiling a chat template) cannot swallow or
rewrite it; the block's exit turns it into RunInterrupted. That abandons the current
phase, which is safe because every write of a run is atomic (a temp file renamed into place;
a label commit is one SQLite transaction): the run directory holds whole files of finished
steps only, and `star run --resume DIR` redoes the rest with the same seeds. The message says
which round and phase were interrupted. A second signal gets the default action (a second
Ctrl+C or SIGTERM ends the process at once); a scheduler's SIGKILL after its grace period is
just as safe.

In a multi-process run, the launcher (torch's elastic agent under `accelerate launch`) sends
SIGTERM to every worker when it gets one itself or when one worker fails; each worker stops
the same way and leaves through `distributed.exit_process`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping
from types import FrameType

from star.errors import RunInterrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def where(frame: FrameType | None, phases: Mapping[str, str], round_function: str = "run_round") -> str:
    """What `frame` was doing: the innermost function named in `phases` (its phase), and the round
    (local `t` of the innermost `round_function` frame), e.g. 'in round 1 (training)'."""
    phase, t = None, None
    while frame is not None:
        name = frame.f_code.co_name
        if phase is None and name in phases:
            phase = phases[name]
        if t is None and name == round_function:
            t = frame.f_locals.get("t")
        frame = frame.f_back
    if t is None:
        return f"in {phase}" if phase else "outside the rounds"
    return f"in round {t}" + (f" ({phase})" if phase else "")


class _Stop(BaseException):
    """The signal on its way out of the block: not an Exception, so `except Exception` lets it pass."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.message, self.signum = message, signum


class Guard:
    """What `stop_on_signals` yields: `hint` (the fix printed with the message) can be set once known."""

    def __init__(self, hint: str) -> None:
        self.hint = hint


@contextlib.contextmanager
def stop_on_signals(phases: Mapping[str, str], hint: str = "continue with `star run --resume DIR`") -> Iterator[Guard]:
    """While the block runs, the first SIGTERM/SIGINT raises RunInterrupted (see the module); handlers restored after.

    Outside the main thread (no handlers can be installed there) the block runs unguarded.
    """
    guard = Guard(hint)
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        restore()  # a second signal gets the default action
        name = signal.Signals(signum).name
        raise _Stop(f"interrupted by {name} {where(frame, phases)}: stopped there; every finished "
                    "round, every committed label and every file written so far is whole and kept", signum)

    for s in SIGNALS:
        signal.signal(s, interrupted)
    try:
        yield guard
    except _Stop as stop:
        raise RunInterrupted(stop.message, stop.signum, hint=guard.hint) from None
    finally:
        restore()
