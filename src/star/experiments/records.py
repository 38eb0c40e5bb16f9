"""Run records: the run directories under the given folders (run dirs, `star compare` grids, or
anything holding them), each read into its arm, config, finished rounds' metrics and, where the
predictions files allow, per-item test correctness (for the report's bootstrap)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from star.config import RunConfig, load_stored_config
from star.errors import RunStateError
from star.experiments.grid import GRID_FILE, grid_cells, is_grid
from star.experiments.items import ItemCorrectness, read_items
from star.store.runs import RunDir

_REQUIRED = ("labels", "accuracy", "ece")


@dataclass
class RunRecord:
    """One run directory as the report sees it: its arm, config and finished rounds' metrics."""

    path: Path
    arm: str
    config: RunConfig | None = None  # None: a grid cell never started
    metrics: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None
    items: ItemCorrectness | None = None  # per-item correctness of every finished round, if recorded
    items_missing: str | None = None  # why `items` is None (when known)
    stopped_by: str | None = None  # the stopping rule (al.stop) that ended the run early, if one did
    from_report: str | None = None  # the report.json the run was read back from (its folder not read)
    first_report: str | None = None  # the report.json that first stored it, when read back over several hops
    #: The dotted settings of `config` that are known: None, all of them; for a run read back from a report
    #: that predates per-run configs, only the settings that report recorded (the rest are defaults).
    known_settings: frozenset[str] | None = None

    @property
    def finished(self) -> bool:
        """Whether every round of `al.rounds` has its metrics.json, or a stopping rule ended the run early."""
        return self.config is not None and (len(self.metrics) >= self.config.al.rounds or self.stopped_by is not None)

    @property
    def machines(self) -> list[str]:
        """The kinds of machine its rounds ran on, in order of first use ('not recorded' for rounds before
        metrics.json kept one); more than one when a run was resumed elsewhere."""
        kinds = [machine_kind(m.get("machine")) for m in self.metrics]
        return list(dict.fromkeys(kinds))

    @property
    def rounds_total(self) -> int | None:
        """Rounds the run was configured for."""
        return None if self.config is None else self.config.al.rounds


def machine_kind(record: dict[str, Any] | None) -> str:
    """A round's machine record (`star.loop.provenance`) as runs are grouped by it: 'GPU or CPU model (bf16
    path)', the two things that decide a bf16 run's bits; 'not recorded' for rounds that kept none."""
    if not record:
        return "not recorded"
    return f"{record.get('gpu') or record.get('cpu', 'unknown')} ({record.get('bf16', '?')})"


def load_record(path: str | os.PathLike[str], arm: str | None = None) -> RunRecord:
    """A run directory's config and finished metrics; arm defaults to its al.strategy."""
    run = RunDir.open(path)
    config = load_stored_config(run.config_path)
    try:
        metrics = run.metrics()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunStateError(f"a metrics.json in {run.path} is not valid JSON: {e}",
                            hint="delete that round's metrics.json and resume the run to redo the round") from e
    for t, m in enumerate(metrics):
        missing = [k for k in _REQUIRED if not isinstance(m.get(k), (int, float))]
        if missing:
            raise RunStateError(f"{run.metrics_path(t)} lacks numeric {', '.join(missing)}",
                                hint="delete it and resume the run to redo the round")
    items, missing = read_items(run, metrics)
    stop = metrics[-1].get("stop") if metrics else None
    stopped_by = stop.get("stopped_by") if isinstance(stop, dict) else None
    return RunRecord(run.path, arm or config.al.strategy, config, metrics, config.seed, items, missing, stopped_by)


def _grid_runs(folder: Path) -> list[RunRecord]:
    """Every cell of a `star compare` folder, started or not."""
    records = []
    for cell in grid_cells(folder):
        started = (cell.path / "config.yaml").is_file()
        records.append(load_record(cell.path, cell.arm) if started else RunRecord(cell.path, cell.arm, seed=cell.seed))
    return records


def _grid_arm(run_path: Path) -> str | None:
    """The arm of a run dir that is a cell of a grid two levels up, if any."""
    folder = run_path.parent.parent
    if not is_grid(folder):
        return None
    return next((c.arm for c in grid_cells(folder) if c.path.resolve() == run_path.resolve()), None)


def _is_run_dir(path: Path) -> bool:
    """config.yaml plus a trace of a run (a round, labels or a log): not just any YAML file."""
    return (path / "config.yaml").is_file() and any(
        (path / name).exists() for name in ("round-0", "labels.sqlite", "log.txt"))


def _runs_under(root: Path) -> list[RunRecord]:
    """A grid folder's cells, a run dir itself, or every grid and run dir beneath `root`."""
    if is_grid(root):
        return _grid_runs(root)
    if (root / "config.yaml").is_file():
        return [load_record(root, _grid_arm(root))]
    grids = sorted(p.parent for p in root.rglob(GRID_FILE))
    records = [r for g in grids for r in _grid_runs(g)]
    for cfg in sorted(root.rglob("config.yaml")):
        if _is_run_dir(cfg.parent) and not any(g in cfg.parents for g in grids):
            records.append(load_record(cfg.parent))
    return records


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> list[RunRecord]:
    """Run records from run dirs and/or `star compare` folders (searched recursively), deduplicated."""
    records, seen = [], set()
    for raw in paths:
        root = Path(raw)
        if not root.is_dir():
            raise RunStateError(f"{root} is not a directory",
                                hint="pass run directories, a `star compare` output folder or a report.json")
        found = _runs_under(root)
        if not found:
            raise RunStateError(f"no star run directories (config.yaml) under {root}",
                                hint="pass the output_dir of `star run` or the --out folder of `star compare`")
        for rec in found:
            if rec.path.resolve() not in seen:
                seen.add(rec.path.resolve())
                records.append(rec)
    return records

