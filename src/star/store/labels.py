"""The label store: every annotation, durable in SQLite (WAL, one transaction per write).

A label records the example id, the answer, who gave it, when, and in which round. The
run's labelled set is derived from this store, so a crash can never lose a committed label.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from star.errors import DataError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    example_id TEXT PRIMARY KEY,
    answer     TEXT NOT NULL,
    annotator  TEXT NOT NULL,
    round      INTEGER NOT NULL,
    created    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_round ON labels(round);
CREATE TABLE IF NOT EXISTS label_history (
    example_id TEXT NOT NULL,
    answer     TEXT NOT NULL,
    annotator  TEXT NOT NULL,
    round      INTEGER NOT NULL,
    created    REAL NOT NULL,
    replaced   REAL NOT NULL
);
"""


_BUSY_SECONDS = 30.0


def _enable_wal(db: sqlite3.Connection) -> None:
    """Switch the file to WAL (persistent), waiting out another process that opens it at the same time.

    SQLite does not run its busy handler for a journal-mode change on a brand-new file, so two
    processes opening one fresh store (a multi-process run) could fail with "database is locked".
    """
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@dataclass(frozen=True)
class Label:
    """One committed annotation."""

    example_id: str
    answer: str
    annotator: str
    round: int
    created: float


class LabelStore:
    """SQLite-backed labels of one run: add or correct (atomically), query by round, derive the labelled set."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=_BUSY_SECONDS)
        _enable_wal(self._db)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add(self, example_id: str, answer: str, annotator: str, round_index: int) -> Label:
        """Commit one label; a second label for the same id is refused (DataError)."""
        return self.add_many([(example_id, answer)], annotator, round_index)[0]

    def add_many(self, items: Iterable[tuple[str, str]], annotator: str, round_index: int) -> list[Label]:
        """Commit several labels in one transaction: all of them or none."""
        now = time.time()
        labels = [Label(i, a, annotator, round_index, now) for i, a in items]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO labels(example_id, answer, annotator, round, created) VALUES (?, ?, ?, ?, ?)",
                [(x.example_id, x.answer, x.annotator, x.round, x.created) for x in labels],
            )
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as e:
            self._db.execute("ROLLBACK")
            raise DataError(f"{self.path}: a label already exists for one of {[x.example_id for x in labels][:5]}",
                            hint="each example is labelled once") from e
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return labels

    def correct_many(self, items: Iterable[tuple[str, str]], annotator: str) -> list[tuple[Label, Label]]:
        """Replace the answers of labelled ids in one transaction; each old label moves to the history.

        A correction keeps the label's round (it stays in the same training sets) and is all or
        nothing: an id without a label raises DataError and changes nothing. Returns (old, new) pairs.
        """
        now, pairs = time.time(), []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for example_id, answer in items:
                old = self.get(example_id)
                if old is None:
                    raise DataError(f"{self.path}: {example_id!r} has no label to correct",
                                    hint="label it first (star label / star annotate)")
                self._db.execute("INSERT INTO label_history(example_id, answer, annotator, round, created, replaced) "
                                 "VALUES (?, ?, ?, ?, ?, ?)",
                                 (old.example_id, old.answer, old.annotator, old.round, old.created, now))
                self._db.execute("UPDATE labels SET answer = ?, annotator = ?, created = ? WHERE example_id = ?",
                                 (answer, annotator, now, example_id))
                pairs.append((old, Label(example_id, answer, annotator, old.round, now)))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return pairs

    def history(self, example_id: str | None = None) -> list[tuple[Label, float]]:
        """Replaced labels (oldest first) with the time each was replaced: nothing given is ever lost."""
        where, args = ("WHERE example_id = ?", (example_id,)) if example_id is not None else ("", ())
        sql = ("SELECT example_id, answer, annotator, round, created, replaced FROM label_history "
               + where + " ORDER BY replaced, rowid")
        return [(Label(*row[:5]), row[5]) for row in self._db.execute(sql, args)]

    def _rows(self, where: str = "", args: tuple = ()) -> list[Label]:
        sql = "SELECT example_id, answer, annotator, round, created FROM labels " + where + " ORDER BY round, rowid"
        return [Label(*row) for row in self._db.execute(sql, args)]

    def all(self) -> list[Label]:
        """Every label, in commit order within rounds."""
        return self._rows()

    def in_round(self, round_index: int) -> list[Label]:
        return self._rows("WHERE round = ?", (round_index,))

    def up_to(self, round_index: int) -> list[Label]:
        """Labels of rounds 0..round_index: the training set of that round's model."""
        return self._rows("WHERE round <= ?", (round_index,))

    def get(self, example_id: str) -> Label | None:
        rows = self._rows("WHERE example_id = ?", (example_id,))
        return rows[0] if rows else None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])
