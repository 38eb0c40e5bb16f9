"""Faults injected into real (tiny) runs: files cut at many offsets, a full disk at each write, a second writer.

Each fault ends in one of two promised ways: a resume ends exactly like the uninterrupted run
(selections, labels, metrics, predictions, adapters and base scores, byte for byte), or the run
stops with one StarError that names the file and the fix.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

from star import loop
from star.errors import RunLockedError, RunStateError, StorageError
from star.store import io
from star.store.labels import LabelStore
from star.store.lock import RunLock
from star.store.runs import RunDir


def outcome(run_dir: Path) -> dict:
    """Everything a run decided and wrote, without wall-clock times: metrics, scores, labels, predictions,
    adapter weights (bytes) and base-model scores (text)."""
    run = RunDir(run_dir)
    rounds = run.finished_rounds()
    store = LabelStore(run.labels_path)
    labels = [(lab.example_id, lab.answer, lab.round) for lab in store.all()]
    store.close()
    return {
        "metrics": [{k: v for k, v in m.items() if k != "seconds"} for m in run.metrics()],
        "files": {f"{t}/{name}": (run.round_dir(t) / name).read_bytes() for t in rounds
                  for name in ("scores.jsonl", "predictions.jsonl", "adapter/adapter_model.safetensors")},
        "labels": labels,
        "base": run.base_scores_path.read_bytes() if run.base_scores_path.is_file() else None,
    }


@pytest.fixture(scope="module")
def config(tiny_run_settings: dict) -> dict:
    """The tiny run of conftest's `tiny_run_settings` (3 rounds; base scores computed in round 1)."""
    return copy.deepcopy(tiny_run_settings)


@pytest.fixture(scope="module")
def finished(config: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, uninterrupted run: the reference every faulty run must end equal to."""
    folder = tmp_path_factory.mktemp("reference") / "run"
    loop.run({**config, "output_dir": str(folder)}, show_progress=False)
    assert RunDir(folder).finished_rounds() == [0, 1, 2]
    return folder


@pytest.fixture(scope="module")
def reference(finished: Path) -> dict:
    out = outcome(finished)
    assert out["base"] and len(set(out["files"]["1/scores.jsonl"].splitlines())) > 1
    return out


def _offset(data: bytes, cut: str | int) -> int:
    """'mid': half way; 'line': just after the first line break; a negative int: from the end."""
    if cut == "mid":
        return len(data) // 2
    if cut == "line":
        return data.index(b"\n") + 1
    return len(data) + cut if cut < 0 else cut


# --- files cut short, then resumed ------------------------------------------------------------

REDONE = [
    ("round-2/metrics.json", [0, 1, "mid", -2]),
    ("round-1/metrics.json", ["mid"]),
    ("round-2/scores.jsonl", [0, "mid", "line", -1]),
    ("round-0/scores.jsonl", ["mid"]),
    ("round-2/predictions.jsonl", ["mid", "line"]),
    ("round-2/adapter/adapter_model.safetensors", [4, 100, -1]),
    ("round-1/adapter/adapter_config.json", ["mid"]),
    ("round-2/manifest.json", ["mid"]),
    ("round-1/manifest.json", [0]),
    ("base_scores.jsonl", [0, "mid", "line", -1]),
]


@pytest.mark.parametrize(("name", "cut"), [(n, c) for n, cuts in REDONE for c in cuts])
def test_a_cut_file_is_redone_and_the_run_ends_as_uninterrupted(finished, reference, tmp_path, capsys, name, cut):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[:_offset(data, cut)])
    loop.run(resume=str(run), show_progress=False)
    assert outcome(run) == reference
    assert name.split("/")[-1] in capsys.readouterr().err or name.startswith("base")  # the redo is said


@pytest.mark.parametrize("cut", [0, 10, "mid", "line", -2])  # -1: only the final line break, nothing lost
def test_a_cut_config_stops_with_the_file_and_the_fix(finished, tmp_path, cut):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    data = (run / "config.yaml").read_bytes()
    (run / "config.yaml").write_bytes(data[:_offset(data, cut)])
    with pytest.raises(RunStateError, match="config.yaml is damaged") as info:
        loop.run(resume=str(run), show_progress=False)
    assert "star config" in info.value.hint


def test_a_cut_label_store_stops_with_the_file_and_the_fix(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    data = (run / "labels.sqlite").read_bytes()
    (run / "labels.sqlite").write_bytes(data[:100])
    with pytest.raises(RunStateError, match="label store .*labels.sqlite is damaged") as info:
        loop.run(resume=str(run), show_progress=False)
    assert "do not delete" in info.value.hint


def test_a_resumed_finished_run_with_a_cut_file_in_an_earlier_round_redoes_from_there(finished, reference, tmp_path):
    """Two damaged rounds: the earlier one counts; everything after it is redone."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for name in ("round-0/predictions.jsonl", "round-2/adapter/adapter_model.safetensors"):
        (run / name).write_bytes((run / name).read_bytes()[:50])
    assert RunDir(run).finished_rounds() == []
    loop.run(resume=str(run), show_progress=False)
    assert outcome(run) == reference


# --- a full disk at each write ----------------------------------------------------------------

class FullDisk:
    """star.store.io's `os`, except that writing `target` (a temp file of it, or the file itself when appended;
    its `nth` write, 0-based) fails with ENOSPC."""

    def __init__(self, target: str, nth: int = 0) -> None:
        self.target, self.nth, self.seen, self.fds = target, nth, 0, set()

    def __getattr__(self, name: str):
        return getattr(os, name)

    def open(self, path, flags, mode=0o777):
        fd = os.open(path, flags, mode)
        name, base = str(path).replace(os.sep, "/").split("/")[-1], self.target.split("/")[-1]
        if (name.startswith("." + base) or name == base) and self.target.split("/")[0] in str(path):  # temp or appended
            self.fds.add(fd)
        return fd

    def write(self, fd, data):
        if fd in self.fds:
            self.seen += 1
            if self.seen - 1 == self.nth:
                os.write(fd, bytes(data[: len(data) // 2]))  # half of it lands, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)


@pytest.mark.parametrize(("target", "nth"), [
    ("round-0/scores.jsonl", 0), ("round-1/metrics.json", 0), ("round-1/manifest.json", 1),
    ("run/base_scores.jsonl", 0), ("round-2/predictions.jsonl", 0), ("round-2/scores.jsonl", 0),
])
def test_a_full_disk_at_a_write_stops_the_run_and_a_resume_ends_as_uninterrupted(config, reference, tmp_path,
                                                                                 monkeypatch, target, nth):
    run = tmp_path / "run"
    monkeypatch.setattr(io, "os", FullDisk(target, nth))
    with pytest.raises(StorageError, match="No space left on device"):
        loop.run({**config, "output_dir": str(run)}, show_progress=False)
    monkeypatch.undo()
    assert not list(run.rglob(".*.tmp")), "a failed write leaves no temp file"
    path = run / target.removeprefix("run/")
    if nth == 0:  # the file was new: it is still absent, not half-written
        assert not path.exists()
    else:  # the manifest as it was before: the selection recorded, nothing else
        assert list(RunDir(run).recorded(1)) == ["scores.jsonl"]
    loop.run(resume=str(run), show_progress=False)
    assert outcome(run) == reference


def test_a_full_disk_while_saving_an_adapter_stops_the_run_and_a_resume_ends_as_uninterrupted(
        config, reference, tmp_path, monkeypatch):
    from peft import peft_model

    real, calls = peft_model.safe_save_file, []

    def full(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # model 1's adapter
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    run = tmp_path / "run"
    monkeypatch.setattr(peft_model, "safe_save_file", full)
    with pytest.raises(StorageError, match="round-1/adapter: No space left on device"):
        loop.run({**config, "output_dir": str(run)}, show_progress=False)
    monkeypatch.undo()
    assert not (run / "round-1" / "adapter").exists() and not list((run / "round-1").glob(".*"))
    loop.run(resume=str(run), show_progress=False)
    assert outcome(run) == reference


def test_a_full_disk_during_a_label_commit_keeps_every_earlier_label(config, reference, tmp_path, monkeypatch):
    real, commits = LabelStore.add_many, []

    def full_at_sixth(store, items, annotator, round_index):
        commits.append(round_index)
        if len(commits) == 6:  # round 1's second label: the store may not grow any more
            pages = store._db.execute("PRAGMA page_count").fetchone()[0]
            store._db.execute(f"PRAGMA max_page_count = {pages}")
            items = [(i, a + " " * 8000) for i, a in items]  # a label too big for the space left
        return real(store, items, annotator, round_index)

    run = tmp_path / "run"
    monkeypatch.setattr(LabelStore, "add_many", full_at_sixth)
    with pytest.raises(StorageError, match="disk is full; nothing of this commit was stored"):
        loop.run({**config, "output_dir": str(run)}, show_progress=False)
    monkeypatch.undo()
    db = sqlite3.connect(run / "labels.sqlite")
    assert [r[0] for r in db.execute("SELECT round FROM labels ORDER BY rowid")] == [0, 0, 0, 0, 1]
    db.close()
    loop.run(resume=str(run), show_progress=False)
    assert outcome(run) == reference


def test_the_cli_prints_a_full_disk_as_one_error_without_a_traceback(config, tmp_path, monkeypatch, capsys):
    from star.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**copy.deepcopy(config), "output_dir": str(tmp_path / "run")}))
    monkeypatch.setattr(io, "os", FullDisk("round-0/metrics.json"))
    assert main(["run", "--quiet", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "error: could not write" in err and "metrics.json: No space left on device" in err
    assert "free disk space" in err and "Traceback" not in err


# --- one writer per run -----------------------------------------------------------------------

def test_a_second_writer_of_a_run_is_refused_naming_the_holder(finished, tmp_path, capsys):
    from star.cli import main

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with RunLock(run / "run.lock"):  # as if another `star run --resume` were writing it
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            loop.run(resume=str(run), show_progress=False)
        assert main(["run", "--quiet", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert "is being written by another process" in err and "Traceback" not in err
    assert len(loop.run(resume=str(run), show_progress=False)) == 3  # free once the holder is done
