"""Run a grid's cells several at a time, each in its own `python -m star run` process.

A cell is a normal run, so running it in a child process gives the same result as running it
in this one. Each worker gets its share of the machine: on a machine with CUDA GPUs, one GPU
per worker (round-robin when there are fewer GPUs than workers); on a CPU, cores / jobs torch
threads (unless OMP_NUM_THREADS is set). A child's output goes to OUT/logs/<arm>-seed-<s>.log.

A SIGTERM or SIGINT to `star compare` stops the grid: no new cell starts, the running cells get
SIGTERM (after a SIGINT, first a few seconds to stop on the Ctrl+C their terminal already sent
them), and it waits for them to stop at a safe point, so no cell is left running on its own.
`star compare --resume OUT` continues every one of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

from star.config import dump_config
from star.errors import RunInterrupted
from star.experiments.grid import Cell
from star.parallel.distributed import share_cores
from star.parallel.signals import stop_on_signals
from star.store.runs import RunDir


@dataclass(frozen=True)
class CellFailure:
    """A cell whose process exited with an error, and where its output is."""

    label: str
    code: int
    log: Path


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries (empty: none)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(slot: int, jobs: int, gpus: Sequence[str], cores: int | None = None) -> dict[str, str]:
    """The environment of worker `slot` of `jobs`: its GPU, or its share of the CPU threads."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    share_cores(env, jobs, cores)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cell_command(cell: Cell, config_dir: Path) -> list[str]:
    """`python -m star run` for a cell: --resume where its run exists, else its config from a file."""
    base = [sys.executable, "-m", "star", "run", "--quiet"]
    if RunDir(cell.path).config_path.is_file():
        return [*base, "--resume", str(cell.path)]
    path = config_dir / f"{cell.file_stem}.yaml"
    path.write_text(dump_config(cell.config), encoding="utf-8")
    return [*base, "--config", str(path)]


#: Seconds running cells get to stop on their own after a SIGINT (a Ctrl+C reaches the whole process group).
SIGINT_GRACE_S = 10.0


class _Children:
    """The running cells' processes; once `stopping`, no new cell starts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def start(self, command: list[str], out: object, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """Start a cell's process, or None when the grid is stopping."""
        with self.lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)  # type: ignore[arg-type]
            self.running.add(proc)
            return proc

    def done(self, proc: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.running.discard(proc)

    def stop(self, signum: int) -> None:
        """No new cell; SIGTERM the running ones (after a SIGINT, only those still running after the grace)."""
        with self.lock:
            self.stopping = True
            procs = list(self.running)
        if signum == signal.SIGINT:
            for proc in procs:
                try:
                    proc.wait(timeout=SIGINT_GRACE_S)
                except subprocess.TimeoutExpired:
                    break
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)


def run_cells(cells: Sequence[Cell], jobs: int, log_dir: Path, say: Callable[[str], None]) -> list[CellFailure]:
    """Run `cells` in `jobs` worker processes, in order as workers free up; return the failures.

    A SIGTERM/SIGINT stops the running cells and raises RunInterrupted once they have stopped (see the module).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    gpus = visible_gpus()
    slots: Queue[int] = Queue()
    for slot in range(jobs):
        slots.put(slot)
    failures: list[CellFailure] = []
    children = _Children()

    with tempfile.TemporaryDirectory(prefix="star-cells-") as config_dir:
        def one(i_cell: tuple[int, Cell]) -> None:
            i, cell = i_cell
            slot = slots.get()
            log = log_dir / f"{cell.file_stem}.log"
            try:
                with open(log, "a", encoding="utf-8") as out:
                    proc = children.start(cell_command(cell, Path(config_dir)), out, worker_env(slot, jobs, gpus))
                    if proc is None:
                        return
                    say(f"[{i}/{len(cells)}] {cell.label}: started (worker {slot}, log {log})")
                    code = proc.wait()
                    children.done(proc)
                if children.stopping:
                    say(f"[{i}/{len(cells)}] {cell.label}: stopped (exit {code})")
                    return
                say(f"[{i}/{len(cells)}] {cell.label}: " + ("finished" if code == 0 else f"FAILED (exit {code})"))
                if code != 0:
                    with children.lock:
                        failures.append(CellFailure(cell.label, code, log))
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, item) for item in enumerate(cells, 1)]
            try:
                with stop_on_signals({"run_cells": "running the grid's cells"},
                                     hint=f"continue the grid with `star compare --resume {log_dir.parent}`"):
                    for future in futures:
                        future.result()
            except RunInterrupted as stop:
                children.stop(stop.signum)
                raise
    return failures
