"""A grid of arms (strategies or ablations) x seeds on one task: resumable runs, then one report.

    OUT/grid.yaml            the grid: base config, arms (name + overrides), seeds, cells
    OUT/<arm>/seed-<s>/      one normal run directory per cell (`star run --resume` works on it)
    OUT/report/              report.md/.html/.json and the figures (`star.experiments.report`)

Every cell's config is validated before any runs. Re-running the same grid (or
`star compare --resume OUT`) skips finished cells (a run a stopping rule ended early is finished), resumes
unfinished ones and starts missing ones.
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
from star.experiments.grid import (
    GRID_FILE,
    Arm,
    Cell,
    cell_path,
    grid_record,
    is_grid,
    read_grid,
    recorded_arms,
    write_grid,
)
from star.experiments.report import write_report
from star.experiments.settings import PER_RUN, differing
from star.store.runs import RunDir

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_RESERVED = {"report", "logs"}  # OUT/report/ and OUT/logs/ (parallel cells' output)


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, got {text!r}",
                          hint="e.g. --seeds 0,1,2") from None
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
            problems.append(f"arm name {arm.name!r} must be a folder name (letters, digits, . _ + -)"
                            " other than 'report'")
        for text in arm.overrides:
            try:
                key = ".".join(parse_override(text)[0])
            except ConfigError:
                problems.append(f"arm {arm.name}: override {text!r} is not key=value")
                continue
            if key in PER_RUN:
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
    for key in PER_RUN:
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
    diff = differing(want, have)
    return None if not diff else f"holds a run with a different config (differs in {', '.join(diff)})"


def plan(base: dict[str, Any], arms: Sequence[Arm], seeds: Sequence[int], out_dir: Path) -> list[Cell]:
    """Every cell's validated config, or one ConfigError listing every bad cell.

    Seed-major order: every arm of the first seed runs before any second seed, so a grid stopped
    part-way still compares all its arms on the same seeds.
    """
    _check_shape(arms, seeds)
    cells, problems = [], []
    for seed in seeds:
        for arm in arms:
            path = out_dir / cell_path(arm.name, seed)
            data = {**copy.deepcopy(base), "seed": seed, "output_dir": str(path)}
            try:
                config = build_config(data, list(arm.overrides), source=f"arm {arm.name}, seed {seed}")
            except ConfigError as e:
                problems.append(f"cell {cell_path(arm.name, seed)}:\n{_indent(e.message)}")
                continue
            cell = Cell(arm.name, seed, path, config)
            mismatch = _existing_mismatch(cell)
            if mismatch:
                problems.append(f"cell {cell.label}: {path} {mismatch}")
            cells.append(cell)
    if problems:
        raise ConfigError(f"{len(problems)} of {len(arms) * len(seeds)} grid cells are invalid:\n"
                          + "\n".join(problems),
                          hint="fix the base config or the arms' overrides (or move the conflicting folders away);"
                               " nothing was run")
    return cells


def _check_grid(out_dir: Path, grid: dict[str, Any]) -> bool:
    """Whether OUT/grid.yaml exists; raise if it records another grid or OUT holds something else."""
    if not is_grid(out_dir):
        if out_dir.exists() and any(out_dir.iterdir()):
            raise RunStateError(f"{out_dir} is not empty and holds no {GRID_FILE}",
                                hint="choose a new --out folder for the grid")
        return False
    old = read_grid(out_dir)
    diff = [k for k in ("arms", "seeds") if old.get(k) != grid[k]]
    try:  # the recorded base as this version reads it: fields added since take their old behaviour
        base_old = _base_dict(with_stored_defaults(old["base_config"]))
    except ConfigError:
        base_old = old["base_config"]
    diff += [f"base_config.{k}" for k in differing(base_old, grid["base_config"])]
    if diff:
        raise ConfigError(f"{out_dir / GRID_FILE} records a different grid (differs in {', '.join(diff)})",
                          hint=f"continue it with `star compare --resume {out_dir}`, or choose a new --out")
    return True


def _rounds_done(cell: Cell) -> int | None:
    """Finished rounds of a cell's run (None: no run there yet)."""
    run = RunDir(cell.path)
    return len(run.finished_rounds()) if run.config_path.is_file() else None


def _stopped_early(cell: Cell) -> str | None:
    """The stopping rule (al.stop) that ended the cell's run early, or None."""
    run = RunDir(cell.path)
    return run.stopped_by() if cell.config.al.stop.rules and run.config_path.is_file() else None


def _skip_finished(cell: Cell, at: str, show_progress: bool) -> bool:
    """Whether the cell's run has all its rounds, or a stopping rule ended it (then say it is skipped); `at`
    prefixes the line."""
    done, total = _rounds_done(cell) or 0, cell.config.al.rounds
    if done >= total:
        _say(show_progress, f"{at}{cell.label}: finished ({done}/{total} rounds), skipped")
        return True
    if (rule := _stopped_early(cell)) is not None:
        _say(show_progress, f"{at}{cell.label}: stopped early by {rule} after round {done - 1}, skipped")
        return True
    return False


def _say_if_stopped(cell: Cell, at: str, show_progress: bool) -> None:
    """After running a cell: say so if it still lacks rounds (e.g. a human annotator's labels), or a stopping
    rule ended it early."""
    done, total = _rounds_done(cell) or 0, cell.config.al.rounds
    if done < total and (rule := _stopped_early(cell)) is not None:
        _say(show_progress, f"{at}{cell.label}: stopped early by {rule} after round {done - 1} of {total}")
    elif done < total:
        _say(show_progress, f"{at}{cell.label}: stopped at {done}/{total} rounds; re-run to continue")


def _run_cell(cell: Cell, i: int, n: int, show_progress: bool) -> None:
    """Skip a finished cell, resume an unfinished one, start a missing one."""
    from star import loop

    at = f"[{i}/{n}] "
    if _skip_finished(cell, at, show_progress):
        return
    done = _rounds_done(cell)
    _say(show_progress, f"{at}{cell.label}: "
         + ("starting" if done is None else f"resuming at round {done} of {cell.config.al.rounds}"))
    if done is None:
        loop.run(cell.config, show_progress=show_progress)
    else:
        loop.run(resume=cell.path, show_progress=show_progress)
    _say_if_stopped(cell, at, show_progress)


def _say(show: bool, text: str) -> None:
    """Print a progress line when progress is shown."""
    if show:
        print(text, flush=True)


def _run_parallel(cells: Sequence[Cell], jobs: int, out: Path, show_progress: bool) -> list[str]:
    """Run the unfinished cells in `jobs` worker processes; return one line per failed cell."""
    from star.experiments.grid_jobs import run_cells  # imports torch: only when cells run in parallel

    todo = [cell for i, cell in enumerate(cells, 1) if not _skip_finished(cell, f"[{i}/{len(cells)}] ", show_progress)]
    failures = run_cells(todo, jobs, out / "logs", lambda text: _say(show_progress, text))
    failed = {f.label for f in failures}
    for cell in todo:
        if cell.label not in failed:
            _say_if_stopped(cell, "", show_progress)
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
    return compare(with_stored_defaults(grid["base_config"]), recorded_arms(grid), list(grid["seeds"]), out_dir,
                   show_progress, jobs)
