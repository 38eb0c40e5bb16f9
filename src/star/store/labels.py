"""The label store: every annotation, durable in SQLite (WAL, one transaction per write).

A label records the example id, the answer, who gave it, when, and in which round. The
run's labelled set is derived from this store, so a crash can never lose a committed label.

Several processes may write one store at once (`star label`, `star annotate`, a run's
oracle): each commit is one `BEGIN IMMEDIATE` transaction, and a writer waits up to
`_BUSY_SECONDS` for another's. A commit that fails (a label already given by another writer,
a full disk, a store locked too long) is rolled back whole and raises one StarError that
says which; every label committed before it stays.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from star.errors import DataError, RunStateError, StarError, StorageError, StoreBusyError

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


def store_error(path: Path, error: sqlite3.Error) -> StarError | None:
    """The StarError for an SQLite failure of the store at `path` (None: not one of the known kinds)."""
    text = str(error).lower()
    kept = "nothing of this commit was stored; every label committed before is kept"
    if "full" in text:
        return StorageError(f"could not write the label store {path}: the disk is full; {kept}",
                            hint="free disk space, then run the command again (a run: `star run --resume DIR`)")
    if "locked" in text or "busy" in text:
        return StoreBusyError(f"the label store {path} stayed locked by another writer for {_BUSY_SECONDS:.0f} s; {kept}",
                              hint="run the command again once the other writer (`star label`, `star annotate`, "
                                   "a run) has committed")
    if "malformed" in text or "not a database" in text:
        return RunStateError(f"the label store {path} is damaged ({error})",
                             hint="restore it from a backup, or try `sqlite3 labels.sqlite .recover`; do not delete "
                                  "it: it holds every label given")
    if "readonly" in text or "unable to open" in text or "disk i/o" in text:
        return StorageError(f"could not open or write the label store {path}: {error}; {kept}",
                            hint="check the folder's permissions and the disk, then run the command again")
    return None


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
        with self._errors():
            self._db = sqlite3.connect(str(self.path), isolation_level=None, timeout=_BUSY_SECONDS)
            try:
                _enable_wal(self._db)
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
            except BaseException:
                self._db.close()
                raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's failures as one StarError each (`store_error`); a transaction still open is rolled back."""
        try:
            yield
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error, AttributeError):  # also a connection closed by a failed open
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            mapped = store_error(self.path, e)
            if mapped is None:
                raise
            raise mapped from e

    def close(self) -> None:
        self._db.close()

    def add(self, example_id: str, answer: str, annotator: str, round_index: int) -> Label:
        """Commit one label; a second label for the same id is refused (DataError)."""
        return self.add_many([(example_id, answer)], annotator, round_index)[0]

    def add_many(self, items: Iterable[tuple[str, str]], annotator: str, round_index: int) -> list[Label]:
        """Commit several labels in one transaction: all of them or none.

        An id that already has a label (given before, or by another writer a moment ago) refuses
        the whole commit with a DataError naming the ids.
        """
        now = time.time()
        labels = [Label(i, a, annotator, round_index, now) for i, a in items]
        try:
            with self._errors():
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT INTO labels(example_id, answer, annotator, round, created) VALUES (?, ?, ?, ?, ?)",
                    [(x.example_id, x.answer, x.annotator, x.round, x.created) for x in labels],
                )
                self._db.execute("COMMIT")
        except sqlite3.IntegrityError as e:  # rolled back by _errors
            ids = [x.example_id for x in labels]
            taken = [i for i in ids if self.get(i) is not None] or ids[:5]
            raise DataError(f"{self.path}: a label already exists for {', '.join(map(repr, taken[:5]))}"
                            f"{' ...' if len(taken) > 5 else ''} (given before, or by another writer a moment ago); "
                            "nothing of this commit was stored", hint="each example is labelled once: drop those ids "
                            "and commit the rest again") from e
        except BaseException:
            if self._db.in_transaction:  # an interrupt between statements
                with contextlib.suppress(sqlite3.Error):
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
            with self._errors():
                self._db.execute("BEGIN IMMEDIATE")
                for example_id, answer in items:
                    old = self.get(example_id)
                    if old is None:
                        raise DataError(f"{self.path}: {example_id!r} has no label to correct",
                                        hint="label it first (star label / star annotate)")
                    self._db.execute("INSERT INTO label_history(example_id, answer, annotator, round, created, "
                                     "replaced) VALUES (?, ?, ?, ?, ?, ?)",
                                     (old.example_id, old.answer, old.annotator, old.round, old.created, now))
                    self._db.execute("UPDATE labels SET answer = ?, annotator = ?, created = ? WHERE example_id = ?",
                                     (answer, annotator, now, example_id))
                    pairs.append((old, Label(example_id, answer, annotator, old.round, now)))
                self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
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
        with self._errors():
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
