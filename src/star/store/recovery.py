"""Before a resumed run reads its directory: find damaged files and undo exactly what depended on them.

A resumed run trusts only what the round manifests recorded (store/runs.py). `recover`:

- deletes temp files of writes cut off by a kill (`RunDir.remove_temporaries`);
- checks every finished round deeply (sizes and SHA-256 of its recorded files, its metrics.json);
  the first damaged one, and every round after it, count as unfinished and are redone;
- cuts base_scores.jsonl back to the last state a round recorded. The file only grows (rows
  are appended), so what a round recorded is a prefix of it. Rows after that prefix were
  written by a round whose selection was not recorded yet, and that round computes them again,
  in the same batches. Where a recorded prefix itself is damaged, the rounds that relied on it
  lose their saved selection and select again, which computes the lost rows again the same way.

Redone rounds use the same seeds and labels, so the run ends as an uninterrupted one would.
Labels are never touched: they live in SQLite, and a round that selects again must select
the labels it already has (checked by the loop). Only the main process calls this, holding the run lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from star.errors import RunStateError
from star.store.io import fsync_dir, write_failed
from star.store.runs import RunDir
from star.store.validate import Record, record_problem


def recover(run: RunDir, say: Callable[[str], None]) -> None:
    """Make `run` safe to resume: each damaged file makes its round unfinished; `say` gets one line for each."""
    for path in run.remove_temporaries():
        say(f"removed {path}, left by an interrupted write")
    if not run.sealed:
        return  # written before manifests: finished rounds are told by their metrics.json, as then
    _check_base_scores(run, say)
    t = 0
    while run.metrics_path(t).is_file():
        if (problem := run.round_problem(t, deep=True)) is not None:
            say(f"round {t} counts as unfinished and is redone from its saved selection: {problem}")
            unfinish(run, t, drop_selection=False)
            return
        t += 1


def _rounds_with_manifest(run: RunDir) -> list[int]:
    """Rounds that have a round folder, in order (their manifests may be missing or damaged)."""
    rounds = [int(p.name.split("-", 1)[1]) for p in run.path.glob("round-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted(rounds)


def _check_base_scores(run: RunDir, say: Callable[[str], None]) -> None:
    """base_scores.jsonl back to the last whole recorded state; rounds that relied on more select again."""
    path, recorded = run.base_scores_path, []
    for t in _rounds_with_manifest(run):
        if (record := run.manifest(t)["base_scores"]) is not None:
            recorded.append((t, record))
    keep: Record | None = None
    for t, record in recorded:
        if record_problem(path, record, prefix=True) is not None:
            break
        keep = record if keep is None or record["bytes"] >= keep["bytes"] else keep
    size = path.stat().st_size if path.is_file() else 0
    kept = 0 if keep is None else int(keep["bytes"])
    if size > kept:
        _cut(path, kept)
        say(f"{path.name}: kept the {kept} bytes recorded by the last finished selection; the rest is computed again")
    for t, record in recorded:
        if int(record["bytes"]) > kept:
            say(f"round {t} selects again: the base-model scores it used are lost from {path.name}")
            unfinish(run, t, drop_selection=True)


def _cut(path: Path, size: int) -> None:
    """Shorten `path` to its first `size` bytes (delete it for 0), durably."""
    try:
        if size == 0:
            path.unlink()
        else:
            with open(path, "r+b") as f:
                f.truncate(size)
                os.fsync(f.fileno())
        fsync_dir(path.parent)
    except OSError as e:
        raise write_failed(path, e) from e


def unfinish(run: RunDir, t: int, drop_selection: bool) -> None:
    """Round t counts as unfinished: its files are no longer recorded (they are written again when it is
    redone); `drop_selection`: its scores.jsonl and base-score state too, so that it selects again."""
    manifest = run.manifest(t)
    keep = {"scores.jsonl"} if not drop_selection else set()
    files = {name: rec for name, rec in manifest["files"].items() if name in keep}
    run.write_manifest(t, files, None if drop_selection else manifest["base_scores"])


def check_selection(run: RunDir, t: int, selected: list[str], labelled: set[str]) -> None:
    """Round t's labels must all be in its selection; a round selected again after damage must select them again."""
    stray = sorted(labelled - set(selected))
    if stray:
        raise RunStateError(f"round {t} of {run.path} selected again, differently: {len(stray)} label(s) of the "
                            f"round are not in the new selection (e.g. {stray[0]!r})",
                            hint="the run's files and its labels no longer agree; restore the run directory from a "
                                 "backup. The labels themselves are kept in labels.sqlite")
