"""SIGTERM / SIGINT: a run stops with one exception saying where; a relaunching parent passes them on."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from star.errors import RunInterrupted
from star.parallel import signals
from star.parallel.distributed import run_forwarding_signals

PHASES = {"train_round": "training", "run_round": "writing"}


def train_round() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises long before


def run_round(t: int) -> None:
    train_round()


def test_sigterm_raises_run_interrupted_naming_round_and_phase_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with (pytest.raises(RunInterrupted, match=r"interrupted by SIGTERM in round 3 \(training\)") as info,
          signals.stop_on_signals(PHASES) as guard):
        guard.hint = "continue with `star run --resume runs/x`"
        run_round(3)
    assert info.value.exit_code == 128 + signal.SIGTERM and "runs/x" in info.value.hint
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_sigint_too_and_outside_the_rounds_it_says_so():
    with pytest.raises(RunInterrupted, match="SIGINT outside the rounds") as info, signals.stop_on_signals(PHASES):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert info.value.exit_code == 130


def test_a_relaunching_parent_passes_sigterm_to_its_launcher_and_returns_its_code(tmp_path):
    ready = tmp_path / "ready"
    child = ("import pathlib, signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
             f"pathlib.Path({str(ready)!r}).touch()\n"
             "time.sleep(60)\n")

    def send_when_ready() -> None:
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=send_when_ready, daemon=True).start()
    started = time.monotonic()
    assert run_forwarding_signals([sys.executable, "-c", child], dict(os.environ)) == 7
    assert time.monotonic() - started < 30 and signal.getsignal(signal.SIGTERM) == before


def test_library_code_catching_exception_cannot_swallow_the_stop():
    """A signal that lands inside `except Exception` code (as jinja2's template compiler has) still stops the run."""
    swallowed = []
    with pytest.raises(RunInterrupted) as err, signals.stop_on_signals({}):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Exception as e:  # noqa: BLE001 - what a library might do
            swallowed.append(e)
    assert swallowed == [] and err.value.signum == signal.SIGTERM
