"""The run's prompt embeddings, by example id: round-<t>/embeddings.npz holds the rows first computed in round t.

Each file is an uncompressed .npz (`ids` (m,) str, `embeddings` (m, d) float32) written atomically
(store/io.py): a kill leaves it whole or absent, never half. A round writes only its own new rows, so
its cost is O(new rows); every row is computed once per run. A resume reads every round's file once;
one that cannot be read (damaged: the zip's checksums fail) is skipped, and its rows are computed
again where a round needs them. Rows of an example are the same wherever they come from (the
embedding is a function of the prompt), so a resumed run selects as an uninterrupted one.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from star.store.io import atomic_write
from star.store.runs import RunDir

log = logging.getLogger(__name__)


def read_embedding_file(path: Path) -> tuple[list[str], np.ndarray]:
    """(ids, embeddings (m, d) float32) of one round's file; ValueError when it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            ids, rows = [str(i) for i in data["ids"]], np.asarray(data["embeddings"], dtype=np.float32)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} cannot be read ({e})") from e
    if rows.ndim != 2 or rows.shape[0] != len(ids):
        raise ValueError(f"{path} holds {len(ids)} ids and embeddings of shape {rows.shape}")
    return ids, rows


def embedding_file_bytes(ids: Sequence[str], rows: np.ndarray) -> bytes:
    """An .npz of `ids` (m,) and `rows` (m, d) as float32, in memory (for an atomic write)."""
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(list(ids), dtype=str), embeddings=np.asarray(rows, dtype=np.float32))
    return buffer.getvalue()


class EmbeddingCache:
    """Every example's embedding (d,) known to the run, the new ones kept until `flush` writes them with a round."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.rows: dict[str, np.ndarray] = {}  # id -> (d,)
        self.by_round: dict[int, list[str]] = {}  # round -> the ids its file holds
        self.pending: list[str] = []  # ids added since the last flush

    @classmethod
    def read(cls, run: RunDir) -> EmbeddingCache:
        """The cache of `run` as its round files hold it (damaged files skipped, with a warning)."""
        cache = cls(run)
        rounds = sorted(int(p.parent.name[6:]) for p in run.path.glob("round-*/embeddings.npz")
                        if p.parent.name[6:].isdigit())
        for t in rounds:
            try:
                ids, rows = read_embedding_file(run.embeddings_path(t))
            except ValueError as e:
                log.warning("%s; its embeddings are computed again where needed", e)
                continue
            cache.by_round[t] = []
            for i, row in zip(ids, rows):
                if i not in cache.rows:
                    cache.rows[i] = row
                    cache.by_round[t].append(i)
        return cache

    def __contains__(self, example_id: str) -> bool:
        return example_id in self.rows

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids without an embedding yet, in the given order."""
        return [i for i in ids if i not in self.rows]

    def add(self, ids: Sequence[str], rows: np.ndarray) -> None:
        """New rows (m, d) for `ids`; ids already known keep their row (an embedding is computed once per run)."""
        for i, row in zip(ids, np.asarray(rows, dtype=np.float32)):
            if i not in self.rows:
                self.rows[i] = row
                self.pending.append(i)

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """Embeddings (len(ids), d) float32, in the order of `ids` (all must be known)."""
        if not ids:
            width = len(next(iter(self.rows.values()))) if self.rows else 0
            return np.zeros((0, width), dtype=np.float32)
        return np.stack([self.rows[i] for i in ids])  # (m, d)

    def flush(self, t: int, write: bool = True) -> None:
        """The pending rows become round t's: round-t/embeddings.npz is written again with them (atomically)
        when there are any and `write` (the main process), together with the rows it already held."""
        if not self.pending:
            return
        ids = self.by_round.setdefault(t, [])
        ids.extend(self.pending)
        self.pending = []
        if write:
            atomic_write(self.run.embeddings_path(t), embedding_file_bytes(ids, self.get(ids)))
