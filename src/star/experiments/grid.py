"""A `star compare` grid: its arms and cells, and OUT/grid.yaml, which only this module reads and writes
(compare records and resumes a grid with it; reports read which arm each cell's run belongs to)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from star.config import RunConfig
from star.errors import ConfigError, RunStateError
from star.store.io import atomic_write

GRID_FILE = "grid.yaml"
GRID_VERSION = 1


def cell_path(arm: str, seed: int) -> str:
    """A cell's folder under the grid, '<arm>/seed-<s>' (also its label)."""
    return f"{arm}/seed-{seed}"


@dataclass(frozen=True)
class Arm:
    """One arm of a grid: a name (its folder) and dotted config overrides, e.g. 'al.strategy=pe'."""

    name: str
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Accept any sequence of overrides; store a tuple (hashable, comparable)."""
        object.__setattr__(self, "overrides", tuple(self.overrides))

    @classmethod
    def strategy(cls, name: str) -> Arm:
        """The arm that runs strategy `name`, named after it."""
        return cls(name, (f"al.strategy={name}",))

    @classmethod
    def parse(cls, text: str) -> Arm:
        """'NAME:key=val,key=val' -> Arm (a piece without '=' continues the previous value, e.g. a list)."""
        name, sep, rest = text.partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"bad --arm {text!r}",
                              hint="write --arm NAME:key=value,key=value, e.g. --arm no-decay:train.weight_decay_b=0")
        pieces: list[str] = []
        for piece in rest.split(","):
            if "=" in piece or not pieces:
                pieces.append(piece.strip())
            else:
                pieces[-1] += "," + piece.strip()
        return cls(name.strip(), tuple(p for p in pieces if p))


@dataclass(frozen=True)
class Cell:
    """One run of the grid: arm x seed, its folder and validated config."""

    arm: str
    seed: int
    path: Path
    config: RunConfig

    @property
    def label(self) -> str:
        """'arm/seed-s', the cell's folder under the grid."""
        return cell_path(self.arm, self.seed)

    @property
    def file_stem(self) -> str:
        """'arm-seed-s', the name of the cell's files outside its folder (its log, its config for a worker)."""
        return f"{self.arm}-seed-{self.seed}"


class RecordedCell(NamedTuple):
    """A cell as grid.yaml lists it: its arm, its seed (as recorded) and its run folder."""

    arm: str
    seed: Any
    path: Path


def grid_record(base: dict[str, Any], arms: Sequence[Arm], seeds: Sequence[int]) -> dict[str, Any]:
    """What grid.yaml records (normalised through YAML, so a re-read compares equal)."""
    data = {
        "version": GRID_VERSION, "base_config": base,
        "arms": [{"name": a.name, "overrides": list(a.overrides)} for a in arms], "seeds": list(seeds),
        "cells": [{"arm": a.name, "seed": s, "path": cell_path(a.name, s)} for a in arms for s in seeds],
    }
    return yaml.safe_load(yaml.safe_dump(data, sort_keys=False))


def write_grid(out_dir: Path, grid: dict[str, Any]) -> None:
    """Write OUT/grid.yaml atomically (temp file, then rename)."""
    atomic_write(out_dir / GRID_FILE, yaml.safe_dump(grid, sort_keys=False))


def is_grid(folder: Path) -> bool:
    """Whether `folder` holds a grid file (is a `star compare` output folder)."""
    return (folder / GRID_FILE).is_file()


def _load(path: Path, hint: str) -> Any:
    """grid.yaml's YAML data; a RunStateError with `hint` when it is not valid YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RunStateError(f"grid file {path} is not valid YAML: {e}", hint=hint) from e


def read_grid(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The grid recorded in OUT/grid.yaml, checked for the fields `compare` needs."""
    path = Path(out_dir) / GRID_FILE
    if not path.is_file():
        raise RunStateError(f"{path} does not exist", hint="pass the --out folder of an earlier `star compare`")
    data = _load(path, hint="restore it or start a new grid")
    if not isinstance(data, dict) or not {"base_config", "arms", "seeds"} <= data.keys():
        raise RunStateError(f"grid file {path} lacks base_config, arms or seeds", hint="restore it or start a new grid")
    return data


def recorded_arms(grid: dict[str, Any]) -> list[Arm]:
    """The arms of a grid read by `read_grid`."""
    return [Arm(str(a["name"]), tuple(a.get("overrides") or ())) for a in grid["arms"]]


def grid_cells(folder: Path) -> list[RecordedCell]:
    """The cells listed in folder/grid.yaml, their paths resolved against the folder."""
    path = folder / GRID_FILE
    hint = "restore it, or report the run folders one by one"
    data = _load(path, hint)
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and {"arm", "path"} <= c.keys() for c in cells):
        raise RunStateError(f"grid file {path} has no valid 'cells' list (arm, seed, path)", hint=hint)
    return [RecordedCell(str(c["arm"]), c.get("seed"), folder / str(c["path"])) for c in cells]
