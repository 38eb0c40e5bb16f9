"""A `star compare` grid and its file, OUT/grid.yaml: the arms, cells and the one reader and writer
of that file (compare writes and resumes it, reports read its cells' arms)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from star.config import RunConfig
from star.errors import ConfigError, RunStateError

GRID_FILE = "grid.yaml"
GRID_VERSION = 1


@dataclass(frozen=True)
class Arm:
    """One arm of a grid: a name (its folder) and dotted config overrides, e.g. 'al.strategy=pe'."""

    name: str
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Accept any sequence of overrides; store a tuple (hashable, comparable)."""
        object.__setattr__(self, "overrides", tuple(self.overrides))

    @classmethod
    def strategy(cls, name: str) -> "Arm":
        """The arm that runs strategy `name`, named after it."""
        return cls(name, (f"al.strategy={name}",))

    @classmethod
    def parse(cls, text: str) -> "Arm":
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
        return f"{self.arm}/seed-{self.seed}"


def grid_record(base: dict[str, Any], arms: Sequence[Arm], seeds: Sequence[int]) -> dict[str, Any]:
    """What grid.yaml records (normalised through YAML, so a re-read compares equal)."""
    data = {
        "version": GRID_VERSION, "base_config": base,
        "arms": [{"name": a.name, "overrides": list(a.overrides)} for a in arms], "seeds": list(seeds),
        "cells": [{"arm": a.name, "seed": s, "path": f"{a.name}/seed-{s}"} for a in arms for s in seeds],
    }
    return yaml.safe_load(yaml.safe_dump(data, sort_keys=False))


def write_grid(out_dir: Path, grid: dict[str, Any]) -> None:
    """Write OUT/grid.yaml atomically (temp file, then rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (GRID_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(grid, sort_keys=False), encoding="utf-8")
    os.replace(tmp, out_dir / GRID_FILE)


def read_grid(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The grid recorded in OUT/grid.yaml, checked for the fields `compare` needs."""
    path = Path(out_dir) / GRID_FILE
    if not path.is_file():
        raise RunStateError(f"{path} does not exist", hint="pass the --out folder of an earlier `star compare`")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RunStateError(f"grid file {path} is not valid YAML: {e}", hint="restore it or start a new grid") from e
    if not isinstance(data, dict) or not {"base_config", "arms", "seeds"} <= data.keys():
        raise RunStateError(f"grid file {path} lacks base_config, arms or seeds", hint="restore it or start a new grid")
    return data


def grid_cells(folder: Path) -> list[dict[str, Any]]:
    """The cells listed in folder/grid.yaml (arm, seed, path relative to the folder)."""
    path = folder / GRID_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RunStateError(f"grid file {path} is not valid YAML: {e}",
                            hint="restore it, or report the run folders one by one") from e
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and {"arm", "path"} <= c.keys() for c in cells):
        raise RunStateError(f"grid file {path} has no valid 'cells' list (arm, seed, path)",
                            hint="restore it, or report the run folders one by one")
    return cells


