"""What a run says: the table of rounds at the end, and its log file while it runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def rounds_table(metrics: list[dict[str, Any]], title: str = "rounds") -> Table:
    """round, labels, accuracy, ECE and seconds per phase."""
    table = Table(title=title)
    for name in ("round", "labels", "strategy", "lambda", "accuracy", "ECE", "score s", "train s", "eval s", "total s"):
        table.add_column(name, justify="right", no_wrap=True)
    for m in metrics:
        s = m["seconds"]
        lam = "-" if m.get("lambda") is None else f"{m['lambda']:.2f}"
        table.add_row(str(m["round"]), str(m["labels"]), m["strategy"], lam, f"{m['accuracy']:.3f}", f"{m['ece']:.3f}",
                      f"{s['score']:.1f}", f"{s['train']:.1f}", f"{s['eval']:.1f}", f"{s['total']:.1f}")
    return table


def print_rounds(metrics: list[dict[str, Any]], run_dir: Path) -> None:
    """Print the table of rounds and where the run lives."""
    console = Console(width=max(Console().width, 120))  # the whole table, also when piped
    console.print(rounds_table(metrics, title=f"STAR run {run_dir}"))
    stop = metrics[-1].get("stop") if metrics else None
    if isinstance(stop, dict) and stop.get("stopped_by"):
        console.print(f"stopped early by {stop['stopped_by']} after round {metrics[-1]['round']} (al.stop)")
    console.print(f"run directory: {run_dir}  (resume with `star run --resume {run_dir}`)")


@contextlib.contextmanager
def log_to(logger: logging.Logger, path: Path) -> Iterator[None]:
    """Also write `logger`'s INFO records to the file `path` while the block runs; then detach and close it."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
