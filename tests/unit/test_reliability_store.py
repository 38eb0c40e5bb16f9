"""Faults of the store layer, injected one at a time: a full disk at each write, cut files, two writers."""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from star.errors import DataError, RunLockedError, RunStateError, StorageError
from star.store import io
from star.store.io import atomic_write, write_json, write_jsonl
from star.store.labels import LabelStore
from star.store.lock import RunLock
from star.store.runs import RunDir
from star.store.validate import (
    config_problem,
    digest,
    json_problem,
    jsonl_problem,
    record_problem,
    safetensors_problem,
    wrap_config,
)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# --- atomic writes ----------------------------------------------------------------------------

@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_full_disk_during_an_atomic_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, failing):
    path = tmp_path / "metrics.json"
    write_json(path, {"round": 0, "accuracy": 0.5})
    before = path.read_bytes()
    monkeypatch.setattr(io.os, failing, _enospc)
    with pytest.raises(StorageError, match="could not write .*metrics.json: No space left") as info:
        write_json(path, {"round": 0, "accuracy": 0.75})
    monkeypatch.undo()
    assert "free disk space" in info.value.hint
    assert path.read_bytes() == before and _no_temporaries(tmp_path)


def test_a_full_disk_on_a_new_file_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(io.os, "write", _enospc)
    with pytest.raises(StorageError):
        write_jsonl(tmp_path / "scores.jsonl", [{"id": "a"}])
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_an_atomic_write_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(io.os, "fsync", lambda fd: synced.append(os.path.isdir(f"/proc/self/fd/{fd}")) or real(fd))
    atomic_write(tmp_path / "a.txt", "x")
    assert synced == [False, True]  # the file's data, then the rename in the folder


def test_an_interrupt_during_an_atomic_write_leaves_no_temp(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(io.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "a.txt", "x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "round-0").mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / "round-0" / f".metrics.json.{int(dead.stdout)}.abcd.tmp"
    live = tmp_path / f".todo.jsonl.{os.getpid()}.abcd.tmp"
    stale_dir = tmp_path / "round-0" / f".adapter.{int(dead.stdout)}.ef01.tmp"
    stale.write_text("{")
    live.write_text("{")
    stale_dir.mkdir()
    assert sorted(run.remove_temporaries()) == sorted([stale, stale_dir])
    assert live.exists() and not stale.exists() and not stale_dir.exists()


# --- checks of cut files ----------------------------------------------------------------------

def _cuts(data: bytes) -> list[int]:
    """Offsets to cut at: the start, early, every line break, the middle, one byte short."""
    breaks = [i + 1 for i, b in enumerate(data) if b == 10][:-1]
    return sorted({0, 1, 7, len(data) // 2, len(data) - 1, *breaks})


def test_every_cut_of_a_json_lines_file_is_caught_by_its_record(tmp_path):
    path = tmp_path / "scores.jsonl"
    write_jsonl(path, [{"id": f"e{i}", "score": i / 7, "selected": i % 2 == 0} for i in range(5)])
    record, data = digest(path), path.read_bytes()
    assert record_problem(path, record) is None and jsonl_problem(path, ("id",)) is None
    for cut in _cuts(data):
        path.write_bytes(data[:cut])
        assert record_problem(path, record, deep=False) is not None, cut
        if cut not in [i + 1 for i, b in enumerate(data) if b == 10] and cut:
            assert jsonl_problem(path, ("id",)) is not None, cut  # mid-line: caught even without a record


def test_a_changed_byte_is_caught_by_the_digest_only(tmp_path):
    path = tmp_path / "p.jsonl"
    write_jsonl(path, [{"id": "a", "answer": "12"}])
    record = digest(path)
    path.write_bytes(path.read_bytes().replace(b"12", b"13"))
    assert record_problem(path, record, deep=False) is None
    assert "SHA-256" in record_problem(path, record)


def test_a_prefix_record_accepts_a_longer_file_with_the_same_start(tmp_path):
    path = tmp_path / "base_scores.jsonl"
    write_jsonl(path, [{"id": "a", "pe": 1.0}])
    record = digest(path)
    write_jsonl(path, [{"id": "a", "pe": 1.0}, {"id": "b", "pe": 2.0}])
    assert record_problem(path, record, prefix=True) is None and record_problem(path, record) is not None
    assert digest(path, record["bytes"]) == record


def test_every_cut_of_metrics_json_is_invalid(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"round": 2, "accuracy": 0.5, "seconds": {"train": 1.0}})
    data = path.read_bytes()
    for cut in range(len(data) - 1):  # all but the final line break
        path.write_bytes(data[:cut])
        assert json_problem(path, ("round",)) is not None, cut


def test_every_cut_of_a_safetensors_file_is_caught(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "adapter_model.safetensors"
    save_file({"a": torch.ones(3, 4), "b": torch.zeros(2)}, str(path))
    data = path.read_bytes()
    assert safetensors_problem(path) is None
    for cut in [0, 4, 8, 20, len(data) // 2, len(data) - 1]:
        path.write_bytes(data[:cut])
        assert safetensors_problem(path) is not None, cut


def test_every_cut_of_a_run_config_is_caught_and_old_configs_still_read():
    text = wrap_config("seed: 0\nal:\n  rounds: 3\n")
    assert config_problem(text) is None and config_problem(text[:-1]) is None
    for cut in range(len(text) - 1):
        assert config_problem(text[:cut]) is not None, cut
    assert config_problem("seed: 0\nal:\n  rounds: 3\n") is None  # written before the end line existed
    assert config_problem("") is not None and config_problem("\n\n") is not None


def test_a_damaged_config_stops_with_the_file_and_the_fix(tmp_path):
    run = RunDir(tmp_path)
    run.write_config("seed: 0\n")
    run.config_path.write_text(run.config_path.read_text()[:-20])
    with pytest.raises(RunStateError, match="config.yaml is damaged") as info:
        RunDir.open(tmp_path)
    assert "star config" in info.value.hint


# --- the run lock -----------------------------------------------------------------------------

def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    with RunLock(tmp_path / "run.lock"):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()} on host") as info:
            RunLock(tmp_path / "run.lock").acquire()
        assert "star label" in info.value.hint
    with RunLock(tmp_path / "run.lock") as again:  # released: free again, and not stale
        assert again.stale is None


def test_a_dead_holders_lock_is_free_and_said_to_be_stale(tmp_path):
    code = ("import sys, time; from star.store.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} "):
            RunLock(tmp_path / "run.lock").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = RunLock(tmp_path / "run.lock").acquire()
    assert lock.stale is not None and lock.stale["pid"] == holder.pid
    lock.release()


# --- the label store --------------------------------------------------------------------------

def _fill_disk(store: LabelStore) -> None:
    """A real SQLITE_FULL: the store may grow by no further page."""
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_during_a_label_commit_loses_nothing_given_before(tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    store.add_many([("a", "1"), ("b", "2")], "human", 0)
    _fill_disk(store)
    with pytest.raises(StorageError, match="disk is full; nothing of this commit was stored"):
        store.add_many([(f"x{i}", "9" * 2000) for i in range(50)], "human", 1)
    assert not store._db.in_transaction
    store.close()
    again = LabelStore(tmp_path / "labels.sqlite")  # space freed: the store works, the old labels are there
    assert [(lab.example_id, lab.answer) for lab in again.all()] == [("a", "1"), ("b", "2")]
    again.add("c", "3", "human", 1)
    assert len(again) == 3


def test_a_failing_commit_rolls_back_the_whole_transaction(tmp_path, monkeypatch):
    store = LabelStore(tmp_path / "labels.sqlite")
    store.add("a", "1", "human", 0)

    class FullOnCommit:
        def __init__(self, db):
            self.db = db

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            return self.db.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.db, name)

    real = store._db
    store._db = FullOnCommit(real)
    with pytest.raises(StorageError):
        store.add_many([("b", "2"), ("c", "3")], "human", 0)
    with pytest.raises(StorageError):
        store.correct_many([("a", "5")], "human")
    store._db = real
    assert [(lab.example_id, lab.answer) for lab in store.all()] == [("a", "1")] and store.history() == []


def test_a_label_given_by_another_writer_first_refuses_the_whole_commit(tmp_path):
    first, second = LabelStore(tmp_path / "labels.sqlite"), LabelStore(tmp_path / "labels.sqlite")
    first.add_many([("a", "1"), ("b", "2")], "human:one", 0)
    with pytest.raises(DataError, match="already exists for 'b'.*nothing of this commit was stored"):
        second.add_many([("c", "3"), ("b", "7")], "human:two", 0)
    assert [(lab.example_id, lab.answer) for lab in second.all()] == [("a", "1"), ("b", "2")]


def test_a_store_locked_too_long_says_so(tmp_path, monkeypatch):
    from star.errors import StoreBusyError
    from star.store import labels

    monkeypatch.setattr(labels, "_BUSY_SECONDS", 0.2)
    holder, waiter = LabelStore(tmp_path / "labels.sqlite"), LabelStore(tmp_path / "labels.sqlite")
    waiter._db.execute("PRAGMA busy_timeout = 200")
    holder._db.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreBusyError, match="stayed locked"):
        waiter.add("a", "1", "human", 0)
    assert time.monotonic() - started < 5
    holder._db.execute("ROLLBACK")
    waiter.add("a", "1", "human", 0)
    assert json.dumps([lab.example_id for lab in holder.all()]) == '["a"]'
