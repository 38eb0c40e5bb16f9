"""Run a grid's cells several at a time, each in its own `python -m star run` process.

A cell is a normal run, so running it in a child process gives the same result as running it
in this one. Each worker gets its share of the machine: on a machine with CUDA GPUs, one GPU
per worker (round-robin when there are fewer GPUs than workers); on a CPU, cores / jobs torch
threads (unless OMP_NUM_THREADS is set). A child's output goes to OUT/logs/<arm>-seed-<s>.log.
"""

from __future__ import annotations

import os
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
from star.experiments.grid import Cell
from star.parallel.distributed import share_cores
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


def run_cells(cells: Sequence[Cell], jobs: int, log_dir: Path, say: Callable[[str], None]) -> list[CellFailure]:
    """Run `cells` in `jobs` worker processes, in order as workers free up; return the failures."""
    log_dir.mkdir(parents=True, exist_ok=True)
    gpus = visible_gpus()
    slots: Queue[int] = Queue()
    for slot in range(jobs):
        slots.put(slot)
    failures: list[CellFailure] = []
    lock = threading.Lock()

    with tempfile.TemporaryDirectory(prefix="star-cells-") as config_dir:
        def one(i_cell: tuple[int, Cell]) -> None:
            i, cell = i_cell
            slot = slots.get()
            log = log_dir / f"{cell.file_stem}.log"
            try:
                say(f"[{i}/{len(cells)}] {cell.label}: started (worker {slot}, log {log})")
                with open(log, "a", encoding="utf-8") as out:
                    code = subprocess.call(cell_command(cell, Path(config_dir)), stdout=out, stderr=subprocess.STDOUT,
                                           env=worker_env(slot, jobs, gpus))
                say(f"[{i}/{len(cells)}] {cell.label}: " + ("finished" if code == 0 else f"FAILED (exit {code})"))
                if code != 0:
                    with lock:
                        failures.append(CellFailure(cell.label, code, log))
            finally:
                slots.put(slot)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(one, enumerate(cells, 1)))
    return failures
