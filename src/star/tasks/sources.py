"""Where a file task's rows come from (`task.path` or `task.hub`), resolved to a pool split and a test split.

`task.path` may be
- a folder with one file per split, `<task.pool_split>.<ext>` and `<task.test_split>.<ext>` (defaults
  train and test), ext one of jsonl, json, csv, parquet: `train.jsonl` + `test.jsonl` as before;
- a folder written by `save_to_disk`: a DatasetDict's splits `task.pool_split` and `task.test_split`
  (unset: the split named 'test', if there is one), or a single Dataset;
- one .jsonl, .json (an array of objects, or JSON lines), .csv or .parquet file.
`task.hub` names a Hugging Face Hub dataset, whose splits are chosen as a DatasetDict's. When there is no
test split (one file, one Dataset, a DatasetDict without one), the test set is `task.test_size` rows held
out of the pool at random (seeded by `task.seed`) and the pool is the rest: the two never share a row.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from star.config import TaskConfig
from star.errors import ConfigError, DataError
from star.tasks.hfdata import load_hub, load_saved, read_parquet, table_records
from star.tasks.tables import Records, read_csv, read_json_array

EXTENSIONS = ("jsonl", "json", "csv", "parquet")
Kind = Literal["jsonl", "json", "csv", "parquet", "disk", "hub"]
_EXAMPLE_FOLDERS = {"gsm8k": "GSM8K", "boolq": "BoolQ", "obqa": "OBQA"}
_KINDS = "a folder with train and test files (.jsonl, .json, .csv or .parquet), one such file, or a save_to_disk folder"

T = TypeVar("T")


@dataclass(frozen=True)
class SplitRef:
    """One split's rows: a file, or a split of a saved or Hub dataset (`split` None: a whole Dataset)."""

    kind: Kind
    location: str
    stem: str  # the middle of the examples' ids, '<task>-<stem>-<row>'
    split: str | None = None

    @property
    def label(self) -> str:
        """How errors name it: the file, or 'folder [split train]'."""
        return self.location if self.split is None else f"{self.location} [split {self.split}]"

    @property
    def by_line(self) -> bool:
        """Rows are numbered by their line in a text file (JSON lines, CSV), else counted from 1."""
        return self.kind in ("jsonl", "csv")


@dataclass(frozen=True)
class Rows:
    """The rows of one split; `typed`: values may be numbers, booleans or null (Parquet, Arrow), not only text."""

    ref: SplitRef
    records: Records
    typed: bool

    def at(self, number: int) -> str:
        """Where row `number` is, as errors say it: 'file:line', or 'file, row N'."""
        return f"{self.ref.label}:{number}" if self.ref.by_line else f"{self.ref.label}, row {number}"


def _stem(name: str) -> str:
    """A file or split name made safe for ids."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "data"


def _json_kind(path: Path) -> Kind:
    """A .json file holding one array is 'json'; anything else is read as JSON lines."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return "json"  # reading it says why it cannot be read
    return "json" if head.startswith(b"[") else "jsonl"


def _file_ref(path: Path, name: str | None = None) -> SplitRef:
    """The split held by one data file, its kind from the extension."""
    ext = path.suffix.lower().lstrip(".")
    if ext not in EXTENSIONS:
        raise ConfigError(f"task.path={str(path)!r} is not a folder, nor a .jsonl, .json, .csv or .parquet file",
                          hint=f"point task.path at {_KINDS}")
    kind: Kind = _json_kind(path) if ext == "json" else ext  # type: ignore[assignment]
    return SplitRef(kind, str(path), _stem(name or path.stem))


def _folder_file(folder: Path, name: str) -> SplitRef:
    """The file `<name>.<ext>` of a folder of split files (`<name>.jsonl` if there is none: reading says so)."""
    found = [folder / f"{name}.{ext}" for ext in EXTENSIONS if (folder / f"{name}.{ext}").is_file()]
    if len(found) > 1:
        raise ConfigError(f"task.path={str(folder)!r} holds {' and '.join(p.name for p in found)}: one split, two files",
                          hint="keep one file per split")
    return _file_ref(found[0], name) if found else SplitRef("jsonl", str(folder / f"{name}.jsonl"), _stem(name))


def _saved_splits(folder: Path) -> list[str] | None:
    """The split names of a saved DatasetDict, [] for a saved Dataset, None for a plain folder."""
    if (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file():
        return []
    index = folder / "dataset_dict.json"
    if not index.is_file():
        return None
    try:
        splits = json.loads(index.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{index} cannot be read: {e}", hint="write the dataset again with DatasetDict.save_to_disk") from None
    return [str(s) for s in splits]


def named_splits(kind: Kind, location: str, names: Sequence[str], config: TaskConfig) -> tuple[SplitRef, SplitRef | None]:
    """The pool split and the test split (None: hold it out) of a DatasetDict or Hub dataset with `names`."""
    where, listed = f"{location} (splits: {', '.join(names) or 'none'})", ", ".join(names)
    pool, test = config.pool_split, config.test_split
    if pool not in names:
        raise ConfigError(f"task.pool_split={pool!r} is not a split of {where}", hint=f"set task.pool_split to one of {listed}")
    if test is None:
        test = "test" if "test" in names and pool != "test" else None
    elif test not in names:
        raise ConfigError(f"task.test_split={test!r} is not a split of {where}",
                          hint=f"set it to one of {listed}, or unset it to hold task.test_size rows out of the pool")
    elif test == pool:
        raise ConfigError(f"task.test_split={test!r} is task.pool_split too", hint="test on another split, or unset it")
    pool_ref = SplitRef(kind, location, _stem(pool), pool)
    return pool_ref, None if test is None else SplitRef(kind, location, _stem(test), test)


def _task_path(config: TaskConfig) -> Path:
    """`task.path` as an existing path, or a ConfigError saying how to set it."""
    folder = _EXAMPLE_FOLDERS.get(config.name, "my_data")
    fix = (f"set it to a folder with train.jsonl and test.jsonl, e.g. task.path=../shared/datasets/{folder},"
           " to one .jsonl/.json/.csv/.parquet file or a save_to_disk folder; or name a Hub dataset with task.hub")
    if not config.path:
        raise ConfigError(f"task.name={config.name!r} needs task.path (or task.hub)", hint=fix)
    path = Path(config.path).expanduser()
    if not path.exists():
        raise ConfigError(f"task.path={config.path!r} does not exist", hint=fix)
    return path


def _path_splits(config: TaskConfig) -> tuple[SplitRef, SplitRef | None]:
    """The pool and test splits `task.path` points at."""
    path = _task_path(config)
    saved = None if path.is_file() else _saved_splits(path)
    if (path.is_file() or saved == []) and config.test_split is not None:
        raise ConfigError(f"task.test_split={config.test_split!r} names a split, and task.path={config.path!r} has"
                          " one split", hint="unset task.test_split: the test set is held out of its rows")
    if path.is_file():
        return _file_ref(path), None
    if saved is None:
        test = config.test_split or "test"
        if test == config.pool_split:
            raise ConfigError(f"task.pool_split={test!r} is the test split too", hint="set task.test_split to another file")
        return _folder_file(path, config.pool_split), _folder_file(path, test)
    if not saved:
        return SplitRef("disk", str(path), _stem(path.name)), None
    return named_splits("disk", str(path), saved, config)


def hold_out(items: Sequence[T], n: int, seed: int, label: str) -> tuple[list[T], list[T]]:
    """(test, rest): `n` items drawn at random (seeded) for the test set, the others kept; both in order."""
    if n >= len(items):
        raise DataError(f"{label} has {len(items)} rows: holding out task.test_size={n} for the test set leaves no pool",
                        hint="lower task.test_size, or give the data a test split (a test file, task.test_split)")
    chosen = set(random.Random(f"star-holdout-{seed}").sample(range(len(items)), n))
    test = [x for i, x in enumerate(items) if i in chosen]
    return test, [x for i, x in enumerate(items) if i not in chosen]


class Source:
    """Where a file task's rows are: `splits()` names the pool and test splits, `rows(ref)` reads one.

    JSON-lines files are read by the caller (star.tasks.files), which checks each line as it reads it.
    """

    def __init__(self, config: TaskConfig) -> None:
        if config.hub and config.path:
            raise ConfigError(f"task.path={config.path!r} and task.hub={config.hub!r} are both set",
                              hint="keep one: task.path for local data, task.hub for a Hub dataset")
        self.config = config
        self._hub: Any = None
        self._splits = None if config.hub else _path_splits(config)

    def splits(self) -> tuple[SplitRef, SplitRef | None]:
        """(pool split, test split or None when the test set is held out of the pool)."""
        if self._splits is None:
            self._hub = load_hub(str(self.config.hub), self.config.hub_config)
            self._splits = named_splits("hub", str(self.config.hub), list(self._hub.keys()), self.config)
        return self._splits

    def rows(self, ref: SplitRef) -> Rows:
        """Every row of a split that is not JSON lines."""
        if ref.kind == "json":
            return Rows(ref, read_json_array(ref.location), typed=False)
        if ref.kind == "csv":
            return Rows(ref, read_csv(ref.location), typed=False)
        if ref.kind == "parquet":
            return Rows(ref, read_parquet(ref.location), typed=True)
        if ref.kind == "disk":
            saved = load_saved(ref.location)
            table = saved if ref.split is None else saved[ref.split]
        elif ref.kind == "hub":
            table = self._hub[ref.split]
        else:
            raise ValueError(f"rows({ref.kind!r}): JSON lines are read by star.tasks.files")
        if len(table) == 0:
            raise DataError(f"{ref.label} is empty (no rows)", hint="choose a split with rows (task.pool_split, task.test_split)")
        return Rows(ref, table_records(table), typed=True)
