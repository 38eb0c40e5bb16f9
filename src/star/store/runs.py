"""The run directory: one object owns its layout and knows which rounds are finished.

    DIR/config.yaml              resolved config
    DIR/labels.sqlite            every label (the labelled set is derived from it)
    DIR/base_scores.jsonl        base-model PE/ME per pool example (computed once, round 0)
    DIR/round-<t>/scores.jsonl   id, u_base, u_full, score, selected per scored pool example
    DIR/round-<t>/adapter/       LoRA adapter of model t (safetensors)
    DIR/round-<t>/predictions.jsonl  test-set answers of model t
    DIR/round-<t>/embeddings.npz the base model's prompt embeddings first computed in round t (store/embeddings.py)
    DIR/round-<t>/stop_set.jsonl model t's answers on the stop set (al.stop: kappa, uncertainty)
    DIR/round-<t>/manifest.json  size and SHA-256 of the round's files (and of base_scores.jsonl) as written
    DIR/round-<t>/metrics.json   written last: round t is finished when it and every recorded file are whole
    DIR/run.lock                 held by the one process writing the run (store/lock.py)
    DIR/llm_annotations.jsonl    al.annotator=llm: one line per request, appended (annotation/llm_ledger.py)
    DIR/tracking.json            the experiment trackers' run ids and last round sent (star.tracking)

Every file is written atomically (store/io.py). A round's manifest is updated after its
selection is written (`write_scores`) and once more before metrics.json (`seal_round`), so a
file cut short or damaged later is never taken for a finished one: the round counts as
unfinished and a resume redoes it (store/recovery.py). Runs written before manifests existed
(config.yaml without `CONFIG_HEADER`) are checked by their metrics.json alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from star.errors import RunStateError
from star.store.io import TEMP_SUFFIX, atomic_write, read_json, read_jsonl, temp_owner, write_json, write_jsonl
from star.store.validate import (
    CONFIG_HEADER,
    Record,
    config_problem,
    digest,
    json_problem,
    jsonl_problem,
    record_problem,
    wrap_config,
)

#: The files of a finished round its manifest records, relative to the round's folder.
ROUND_FILES = ("scores.jsonl", "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "predictions.jsonl")


class RunDir:
    """Paths and state of one run directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.yaml")
    labels_path = property(lambda self: self.path / "labels.sqlite")
    base_scores_path = property(lambda self: self.path / "base_scores.jsonl")
    log_path = property(lambda self: self.path / "log.txt")
    lock_path = property(lambda self: self.path / "run.lock")
    tracking_path = property(lambda self: self.path / "tracking.json")  # the tracker runs' ids (star.tracking)
    llm_ledger_path = property(lambda self: self.path / "llm_annotations.jsonl")  # the LLM annotator's requests

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

    def manifest_path(self, t: int) -> Path:
        return self.round_dir(t) / "manifest.json"

    def embeddings_path(self, t: int) -> Path:
        """round-t/embeddings.npz: prompt embeddings first computed in round t (diversity strategies only)."""
        return self.round_dir(t) / "embeddings.npz"

    def stop_set_path(self, t: int) -> Path:
        """round-t/stop_set.jsonl: model t's answers on the stopping rules' stop set (al.stop)."""
        return self.round_dir(t) / "stop_set.jsonl"

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
    def create(cls, path: str | os.PathLike[str]) -> RunDir:
        """A new run directory; refuses one that already holds a run."""
        cls.refuse_existing(path)
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory (for resume, report, query, label), its config.yaml whole."""
        run = cls(path)
        if not run.config_path.is_file():
            raise RunStateError(f"{run.path} is not a star run directory (no config.yaml)",
                                hint="pass the output_dir of an earlier `star run`")
        if (problem := config_problem(run.config_path.read_text(encoding="utf-8", errors="replace"))) is not None:
            raise RunStateError(f"{run.config_path} is damaged ({problem}); nothing was read from it",
                                hint="restore it from a backup, or write the run's resolved config again with "
                                     f"`star config --config ORIGINAL.yaml [overrides] > {run.config_path}`")
        return run

    def write_config(self, text: str) -> None:
        """config.yaml: the resolved config, atomically, between a first and a last line that show it is whole."""
        atomic_write(self.config_path, wrap_config(text))

    @property
    def sealed(self) -> bool:
        """Written by a star that records manifests (its config.yaml starts with `CONFIG_HEADER`)."""
        try:
            with open(self.config_path, encoding="utf-8", errors="replace") as f:
                return f.read(len(CONFIG_HEADER)) == CONFIG_HEADER
        except OSError:
            return False

    def write_scores(self, t: int, ids: Sequence[str], u_base: Sequence[float] | None, u_full: Sequence[float] | None,
                     scores: Sequence[float], selected: Sequence[int], cost: Sequence[float] | None = None) -> None:
        """round-t/scores.jsonl: one row per scored candidate, in candidate order (`cost`: each one's estimated
        annotation cost, a column of its own); then recorded in the manifest."""
        picked = {int(c) for c in selected}
        write_jsonl(self.scores_path(t), (
            {"id": ids[j], "u_base": None if u_base is None else float(u_base[j]),
             "u_full": None if u_full is None else float(u_full[j]), "score": float(scores[j]), "selected": j in picked,
             **({} if cost is None else {"cost": float(cost[j])})}
            for j in range(len(ids))))
        self.record(t, ["scores.jsonl"])

    def saved_selection(self, t: int) -> list[str] | None:
        """The ids selected in round t, highest score first, or None when its scores are not written (or not whole)."""
        path = self.scores_path(t)
        if not path.is_file():
            return None
        if self.sealed:
            record = self.recorded(t).get("scores.jsonl")
            if record is None or record_problem(path, record) is not None:
                return None
        elif jsonl_problem(path, ("id", "score", "selected")) is not None:
            return None
        rows = sorted((r for r in read_jsonl(path) if r["selected"]), key=lambda r: -r["score"])
        return [r["id"] for r in rows]

    # --- the manifest of a round -------------------------------------------------------------

    def manifest(self, t: int) -> dict[str, Any]:
        """round-t/manifest.json: {"files": {name: record}, "base_scores": record or None}; empty when missing or damaged."""
        path = self.manifest_path(t)
        if json_problem(path, ("files",)) is not None:
            return {"files": {}, "base_scores": None}
        data = read_json(path)
        return {"files": dict(data["files"]), "base_scores": data.get("base_scores")}

    def recorded(self, t: int) -> dict[str, Record]:
        """Round t's files as its manifest recorded them, by name relative to the round's folder."""
        return self.manifest(t)["files"]

    def write_manifest(self, t: int, files: dict[str, Record], base_scores: Record | None) -> None:
        write_json(self.manifest_path(t), {"round": t, "files": files, "base_scores": base_scores})

    def record(self, t: int, names: Iterable[str]) -> None:
        """Record the size and SHA-256 of round t's files `names`, and base_scores.jsonl as it is now."""
        files = self.recorded(t)
        files.update({name: digest(self.round_dir(t) / name) for name in names})
        base = digest(self.base_scores_path) if self.base_scores_path.is_file() else None
        self.write_manifest(t, files, base)

    def seal_round(self, t: int) -> None:
        """Record every file of round t (just before its metrics.json is written)."""
        self.record(t, ROUND_FILES)

    # --- finished rounds ----------------------------------------------------------------------

    def round_problem(self, t: int, deep: bool = False) -> str | None:
        """Why round t does not count as finished (None: it does): its metrics.json, or a recorded file, is
        missing, cut short or damaged. `deep` also compares contents (SHA-256), not only sizes."""
        metrics = self.metrics_path(t)
        if (problem := json_problem(metrics, ("round",))) is None and read_json(metrics)["round"] != t:
            problem = f"its round is not {t}"
        if problem is not None:
            return f"round-{t}/metrics.json: {problem}"
        if not self.sealed:
            return None
        files = self.recorded(t)
        for name in ROUND_FILES:
            record = files.get(name)
            problem = "not recorded in manifest.json" if record is None else record_problem(
                self.round_dir(t) / name, record, deep=deep)
            if problem is not None:
                return f"round-{t}/{name}: {problem}"
        return None

    def finished_rounds(self) -> list[int]:
        """Rounds 0..t-1 that are finished (`round_problem`: metrics.json and every recorded file whole), from 0."""
        done, t = [], 0
        while self.metrics_path(t).is_file() and self.round_problem(t) is None:
            done.append(t)
            t += 1
        return done

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.json of every finished round, in order."""
        return [read_json(self.metrics_path(t)) for t in self.finished_rounds()]

    def stopped_by(self) -> str | None:
        """The stopping rule that ended the run early (its last finished round's metrics.json "stop"), or None."""
        done = self.finished_rounds()
        if not done:
            return None
        stop = read_json(self.metrics_path(done[-1])).get("stop")
        return stop.get("stopped_by") if isinstance(stop, dict) else None

    def remove_temporaries(self) -> list[Path]:
        """Delete temp files and folders of atomic writes left by processes no longer running; return them."""
        found = [*self.path.glob(f".*{TEMP_SUFFIX}"), *self.path.glob(f"round-*/.*{TEMP_SUFFIX}"),
                 *self.path.glob(f"round-*/adapter/.*{TEMP_SUFFIX}")]
        removed = []
        for path in found:
            owner = temp_owner(path)
            if owner is None or _alive(owner):
                continue
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed.append(path)
        return removed


def _alive(pid: int) -> bool:
    """Is process `pid` running on this machine?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
