"""A grid of arms (strategies or ablations) x seeds on one task: resumable runs, then one report.

    OUT/grid.yaml            the grid: base config, arms (name + overrides), seeds, cells
    OUT/<arm>/seed-<s>/      one normal run directory per cell (`star run --resume` works on it)
    OUT/report/              report.md/.html/.json and the figures (`star.experiments.report`)

Every cell's config is validated before any runs. Re-running the same grid (or
`star compare --resume OUT`) skips finished cells, resumes unfinished ones and starts missing ones.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from star.config import (
    RunConfig,
    build_config,
    load_stored_config,
    parse_override,
    with_stored_defaults,
)
from star.errors import ConfigError, RunStateError
from star.experiments.grid import GRID_FILE, Arm, Cell, grid_record, read_grid, write_grid
from star.experiments.report import write_report
from star.store.runs import RunDir

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_RESERVED = {"report", "logs"}  # OUT/report/ and OUT/logs/ (parallel cells' output)
_GRID_SET = ("seed", "output_dir")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}", hint="e.g. --seeds 0,1,2") from None
    if not seeds:
        raise ConfigError("--seeds is empty", hint="e.g. --seeds 0,1,2")
    return seeds


def parse_strategies(text: str) -> list[Arm]:
    """'random,pe-dynamic' -> one arm per strategy, named after it."""
    return [Arm.strategy(s.strip()) for s in text.split(",") if s.strip()]


def _check_shape(arms: Sequence[Arm], seeds: Sequence[int]) -> None:
    """Arms named uniquely and safely, overrides well-formed, seeds unique integers."""
    problems = []
    if not arms:
        problems.append("no arms: give --strategies and/or --arm")
    if not seeds:
        problems.append("no seeds: give --seeds, e.g. 0,1,2")
    names = [a.name for a in arms]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"arm {name!r} is given more than once")
    for arm in arms:
        if not _ARM_NAME.match(arm.name) or arm.name in _RESERVED:
            problems.append(f"arm name {arm.name!r} must be a folder name (letters, digits, . _ + -) other than 'report'")
        for text in arm.overrides:
            try:
                key = ".".join(parse_override(text)[0])
            except ConfigError:
                problems.append(f"arm {arm.name}: override {text!r} is not key=value")
                continue
            if key in _GRID_SET:
                problems.append(f"arm {arm.name}: {key} is set by the grid per cell; remove it")
    if len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        problems.append(f"seeds {list(seeds)} must be distinct integers")
    if problems:
        raise ConfigError("invalid grid:\n" + "\n".join(f"  - {p}" for p in problems),
                          hint="fix --strategies / --arm / --seeds; nothing was run")


def _base_dict(base_config: RunConfig | dict[str, Any] | None) -> dict[str, Any]:
    """The validated base config as plain data, without the per-cell seed and output_dir."""
    if base_config is None or isinstance(base_config, dict):
        base_config = build_config(copy.deepcopy(base_config or {}), source="compare base config")
    data = base_config.model_dump(mode="json")
    for key in _GRID_SET:
        data.pop(key, None)
    return data


def _indent(text: str) -> str:
    """Every line of `text` indented by four spaces."""
    return "\n".join("    " + line for line in text.splitlines())


def _existing_mismatch(cell: Cell) -> str | None:
    """Why a cell folder's existing run is not this cell's run (None: absent or the same)."""
    run = RunDir(cell.path)
    if not run.config_path.is_file():
        return None
    try:
        have = load_stored_config(run.config_path).model_dump(mode="json")
    except ConfigError as e:
        return f"its config.yaml is invalid:\n{_indent(e.message)}"
    want = cell.config.model_dump(mode="json")
    have.pop("output_dir", None)
    want.pop("output_dir", None)
    diff = sorted(k for k in _flat(want).keys() | _flat(have).keys() if _flat(want).get(k) != _flat(have).get(k))
    return None if not diff else f"holds a run with a different config (differs in {', '.join(diff)})"


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'al': {'rounds': 3}} -> {'al.rounds': 3}."""
    if not isinstance(data, dict):
        return {prefix: data}
    return {k: v for key, value in data.items() for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}


def plan(base: dict[str, Any], arms: Sequence[Arm], seeds: Sequence[int], out_dir: Path) -> list[Cell]:
    """Every cell's validated config, or one ConfigError listing every bad cell.

    Seed-major order: every arm of the first seed runs before any second seed, so a grid stopped
    part-way still compares all its arms on the same seeds.
    """
    _check_shape(arms, seeds)
    cells, problems = [], []
    for seed in seeds:
        for arm in arms:
            path = out_dir / arm.name / f"seed-{seed}"
            data = {**copy.deepcopy(base), "seed": seed, "output_dir": str(path)}
            try:
                cell = Cell(arm.name, seed, path, build_config(data, list(arm.overrides), source=f"arm {arm.name}, seed {seed}"))
            except ConfigError as e:
                problems.append(f"cell {arm.name}/seed-{seed}:\n{_indent(e.message)}")
                continue
            mismatch = _existing_mismatch(cell)
            if mismatch:
                problems.append(f"cell {cell.label}: {path} {mismatch}")
            cells.append(cell)
    if problems:
        raise ConfigError(f"{len(problems)} of {len(arms) * len(seeds)} grid cells are invalid:\n" + "\n".join(problems),
                          hint="fix the base config or the arms' overrides (or move the conflicting folders away);"
                               " nothing was run")
    return cells


def _check_grid(out_dir: Path, grid: dict[str, Any]) -> bool:
    """Whether OUT/grid.yaml exists; raise if it records another grid or OUT holds something else."""
    path = out_dir / GRID_FILE
    if not path.is_file():
        if out_dir.exists() and any(out_dir.iterdir()):
            raise RunStateError(f"{out_dir} is not empty and holds no {GRID_FILE}",
                                hint="choose a new --out folder for the grid")
        return False
    old = read_grid(out_dir)
    diff = [k for k in ("arms", "seeds") if old.get(k) != grid[k]]
    try:  # the recorded base as this version reads it: fields added since take their old behaviour
        base_old = _flat(_base_dict(with_stored_defaults(old["base_config"])))
    except ConfigError:
        base_old = _flat(old["base_config"])
    base_new = _flat(grid["base_config"])
    diff += sorted(f"base_config.{k}" for k in base_old.keys() | base_new.keys() if base_old.get(k) != base_new.get(k))
    if diff:
        raise ConfigError(f"{path} records a different grid (differs in {', '.join(diff)})",
                          hint=f"continue it with `star compare --resume {out_dir}`, or choose a new --out")
    return True


def _rounds_done(cell: Cell) -> int | None:
    """Finished rounds of a cell's run (None: no run there yet)."""
    run = RunDir(cell.path)
    return len(run.finished_rounds()) if run.config_path.is_file() else None


def _run_cell(cell: Cell, i: int, n: int, show_progress: bool) -> None:
    """Skip a finished cell, resume an unfinished one, start a missing one."""
    from star import loop

    done = _rounds_done(cell)
    total = cell.config.al.rounds
    if done is not None and done >= total:
        _say(show_progress, f"[{i}/{n}] {cell.label}: finished ({done}/{total} rounds), skipped")
        return
    _say(show_progress, f"[{i}/{n}] {cell.label}: " + ("starting" if done is None else f"resuming at round {done} of {total}"))
    if done is None:
        loop.run(cell.config, show_progress=show_progress)
    else:
        loop.run(resume=cell.path, show_progress=show_progress)
    done = _rounds_done(cell) or 0
    if done < total:  # e.g. a human annotator has not given this round's labels yet
        _say(show_progress, f"[{i}/{n}] {cell.label}: stopped at {done}/{total} rounds; re-run to continue")


def _say(show: bool, text: str) -> None:
    """Print a progress line when progress is shown."""
    if show:
        print(text, flush=True)


def _run_parallel(cells: Sequence[Cell], jobs: int, out: Path, show_progress: bool) -> list[str]:
    """Run the unfinished cells in `jobs` worker processes; return one line per failed cell."""
    from star.experiments.grid_jobs import run_cells

    todo = []
    for i, cell in enumerate(cells, 1):
        done = _rounds_done(cell) or 0
        if done >= cell.config.al.rounds:
            _say(show_progress, f"[{i}/{len(cells)}] {cell.label}: finished ({done}/{cell.config.al.rounds} rounds), skipped")
        else:
            todo.append(cell)
    failures = run_cells(todo, jobs, out / "logs", lambda text: _say(show_progress, text))
    for cell in todo:
        done = _rounds_done(cell) or 0
        if done < cell.config.al.rounds and cell.label not in {f.label for f in failures}:
            _say(show_progress, f"{cell.label}: stopped at {done}/{cell.config.al.rounds} rounds; re-run to continue")
    return [f"{f.label}: exit code {f.code}, see {f.log}" for f in failures]


def compare(base_config: RunConfig | dict[str, Any] | None, arms: Sequence[Arm], seeds: Sequence[int],
            out_dir: str | os.PathLike[str], show_progress: bool = True, jobs: int = 1) -> Path:
    """Run (or continue) every arm x seed cell under `out_dir`, then write OUT/report/; returns that folder.

    jobs > 1 runs that many cells at once, each in its own process (`star.experiments.grid_jobs`).
    """
    out = Path(out_dir)
    base = _base_dict(base_config)
    _check_shape(arms, seeds)
    grid = grid_record(base, arms, seeds)
    existing = _check_grid(out, grid)
    cells = plan(base, arms, seeds, out)
    if not existing:
        write_grid(out, grid)
    failed: list[str] = []
    if jobs > 1:
        failed = _run_parallel(cells, jobs, out, show_progress)
    else:
        for i, cell in enumerate(cells, 1):
            _run_cell(cell, i, len(cells), show_progress)
    report = write_report([out], out / "report")
    _say(show_progress, f"report: {report / 'report.md'}")
    if failed:
        raise RunStateError(f"{len(failed)} grid cell(s) failed (the report covers the others):\n"
                            + "\n".join(f"  - {line}" for line in failed),
                            hint="fix the cause shown in the log, then re-run the same command to continue")
    return report


def resume_compare(out_dir: str | os.PathLike[str], show_progress: bool = True, jobs: int = 1) -> Path:
    """Continue the grid recorded in OUT/grid.yaml."""
    grid = read_grid(out_dir)
    arms = [Arm(str(a["name"]), tuple(a.get("overrides") or ())) for a in grid["arms"]]
    return compare(with_stored_defaults(grid["base_config"]), arms, list(grid["seeds"]), out_dir, show_progress, jobs)
