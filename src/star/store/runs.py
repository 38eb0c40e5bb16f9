"""The run directory: one object owns its layout and knows which rounds are finished.

    DIR/config.yaml              resolved config
    DIR/labels.sqlite            every label (the labelled set is derived from it)
    DIR/base_scores.jsonl        base-model PE/ME per pool example (computed once, round 0)
    DIR/round-<t>/scores.jsonl   id, u_base, u_full, score, selected per scored pool example
    DIR/round-<t>/adapter/       LoRA adapter of model t (safetensors)
    DIR/round-<t>/predictions.jsonl  test-set answers of model t
    DIR/round-<t>/metrics.json   written last: its presence marks round t finished
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from star.errors import RunStateError
from star.store.io import read_json, read_jsonl, write_jsonl


class RunDir:
    """Paths and state of one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    labels_path = property(lambda self: self.path / "labels.sqlite")
    base_scores_path = property(lambda self: self.path / "base_scores.jsonl")
    log_path = property(lambda self: self.path / "log.txt")

    def round_dir(self, t: int) -> Path:
        return self.path / f"round-{t}"

    def scores_path(self, t: int) -> Path:
        return self.round_dir(t) / "scores.jsonl"

    def metrics_path(self, t: int) -> Path:
        return self.round_dir(t) / "metrics.json"

    def adapter_dir(self, t: int) -> Path:
        return self.round_dir(t) / "adapter"

    def predictions_path(self, t: int) -> Path:
        return self.round_dir(t) / "predictions.jsonl"

    @classmethod
    def refuse_existing(cls, path: str | os.PathLike[str]) -> None:
        """Raise RunStateError when `path` already holds a run (checked before any model loads)."""
        run = cls(path)
        if run.config_path.exists():
            raise RunStateError(
                f"{run.path} already holds a run",
                hint=f"continue it with `star run --resume {run.path}`, or set output_dir to a new folder",
            )

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> "RunDir":
        """A new run directory; refuses one that already holds a run."""
        cls.refuse_existing(path)
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "RunDir":
        """An existing run directory (for resume, report, query, label)."""
        run = cls(path)
        if not run.config_path.is_file():
            raise RunStateError(f"{run.path} is not a star run directory (no config.yaml)",
                                hint="pass the output_dir of an earlier `star run`")
        return run

    def write_scores(self, t: int, ids: Sequence[str], u_base: Sequence[float] | None, u_full: Sequence[float] | None,
                     scores: Sequence[float], selected: Sequence[int]) -> None:
        """round-t/scores.jsonl: one row per scored candidate, in candidate order."""
        picked = set(int(c) for c in selected)
        write_jsonl(self.scores_path(t), (
            {"id": ids[j], "u_base": None if u_base is None else float(u_base[j]),
             "u_full": None if u_full is None else float(u_full[j]), "score": float(scores[j]), "selected": j in picked}
            for j in range(len(ids))))

    def saved_selection(self, t: int) -> list[str] | None:
        """The ids selected in round t, highest score first, or None when its scores are not written yet."""
        path = self.scores_path(t)
        if not path.is_file():
            return None
        rows = sorted((r for r in read_jsonl(path) if r["selected"]), key=lambda r: -r["score"])
        return [r["id"] for r in rows]

    def finished_rounds(self) -> list[int]:
        """Rounds 0..t-1 whose metrics.json exists, contiguous from 0."""
        done, t = [], 0
        while self.metrics_path(t).is_file():
            done.append(t)
            t += 1
        return done

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.json of every finished round, in order."""
        return [read_json(self.metrics_path(t)) for t in self.finished_rounds()]
