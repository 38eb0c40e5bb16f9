"""Per-item test correctness of a run: read from round-<t>/predictions.jsonl, checked against the
round's metrics.json, and written compactly into report.json so the bootstrap can be recomputed.

A run has item data only when every finished round has its predictions file, one row per test
item (the count is metrics.json's n_test), the same items every round, and the mean of `correct`
reproduces the round's accuracy; otherwise the reason is kept and the report's bootstrap falls
back to resampling seeds only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from star.store.io import read_jsonl
from star.store.runs import RunDir

_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ItemCorrectness:
    """One run's test answers: which items, and whether each round answered each correctly."""

    ids: tuple[str, ...]  # (N,) test item ids, sorted
    correct: np.ndarray  # (T, N) 1 where round t answered item i correctly, else 0 (int8)


def _round_items(path: Path) -> dict[str, int]:
    """{id: correct 0/1} of one predictions.jsonl; ValueError when a row lacks them or repeats an id."""
    rows = read_jsonl(path)
    out: dict[str, int] = {}
    for row in rows:
        if not isinstance(row.get("id"), str) or not isinstance(row.get("correct"), (bool, int)):
            raise ValueError(f"{path.name} has a row without a string id and a boolean correct")
        if row["id"] in out:
            raise ValueError(f"{path.name} repeats item {row['id']!r}")
        out[row["id"]] = int(bool(row["correct"]))
    return out


def _check_round(t: int, items: dict[str, int], metrics: dict[str, Any], ids: tuple[str, ...] | None) -> str | None:
    """Why round t's items cannot stand in for its metrics (None when they can)."""
    n_test = metrics.get("n_test")
    if isinstance(n_test, int) and len(items) != n_test:
        return f"round-{t}/predictions.jsonl has {len(items)} items, metrics.json n_test {n_test}"
    if ids is not None and tuple(sorted(items)) != ids:
        return f"round-{t}/predictions.jsonl has other items than round 0"
    if not items or abs(sum(items.values()) / len(items) - float(metrics["accuracy"])) > _TOLERANCE:
        return f"round-{t}/predictions.jsonl does not reproduce metrics.json accuracy"
    return None


def read_items(run: RunDir, metrics: Sequence[dict[str, Any]]) -> tuple[ItemCorrectness | None, str | None]:
    """The run's per-item correctness over its finished rounds, or (None, why not)."""
    ids: tuple[str, ...] | None = None
    rows = []
    for t, m in enumerate(metrics):
        path = run.predictions_path(t)
        if not path.is_file():
            return None, f"no round-{t}/predictions.jsonl"
        try:
            items = _round_items(path)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            return None, f"round-{t}/predictions.jsonl unreadable: {e}"
        why = _check_round(t, items, m, ids)
        if why is not None:
            return None, why
        ids = ids or tuple(sorted(items))
        rows.append([items[i] for i in ids])
    if ids is None:
        return None, "no finished round"
    return ItemCorrectness(ids, np.asarray(rows, dtype=np.int8)), None


def items_json(runs: Sequence[tuple[str, ItemCorrectness | None, str | None]]) -> dict[str, Any]:
    """The compact form in report.json: each distinct test set's ids once, and per run (path,
    correctness, why missing) a string of '0'/'1' per round, aligned with its test set's ids."""
    sets: list[tuple[str, ...]] = []
    out = []
    for path, items, missing in runs:
        if items is None:
            out.append({"path": path, "test_set": None, "correct": None, "missing": missing})
            continue
        if items.ids not in sets:
            sets.append(items.ids)
        out.append({"path": path, "test_set": sets.index(items.ids),
                    "correct": ["".join(str(int(c)) for c in row) for row in items.correct], "missing": None})
    return {"test_sets": [list(s) for s in sets], "runs": out}


def items_from_json(data: dict[str, Any]) -> dict[str, ItemCorrectness]:
    """{run path: its per-item correctness} back from report.json's `items` (runs without data left out)."""
    sets = [tuple(s) for s in data["test_sets"]]
    return {r["path"]: ItemCorrectness(sets[r["test_set"]], np.array([[int(c) for c in row] for row in r["correct"]],
                                                                       dtype=np.int8))
            for r in data["runs"] if r["correct"] is not None}
