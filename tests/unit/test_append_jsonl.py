"""Append-only JSON lines (base_scores.jsonl): whole lines only, O(new rows), a torn tail dropped or cut."""

from __future__ import annotations

import errno
import json
import os

import pytest

from star.errors import StorageError
from star.store.io import append_jsonl, read_appended_jsonl


def test_appends_keep_earlier_bytes_and_read_back_in_order(tmp_path):
    path = tmp_path / "scores.jsonl"
    append_jsonl(path, [{"id": "a", "pe": 1.5}])
    first = path.read_bytes()
    append_jsonl(path, [{"id": "b", "pe": 2.0}, {"id": "c", "pe": 0.25}])
    assert path.read_bytes().startswith(first)  # a prefix: what a round's manifest recorded stays valid
    assert [r["id"] for r in read_appended_jsonl(path)] == ["a", "b", "c"]


def test_torn_last_line_is_dropped_on_read_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "scores.jsonl"
    append_jsonl(path, [{"id": "a", "pe": 1.0}])
    with open(path, "ab") as f:
        f.write(b'{"id": "b", "p')  # a kill mid-append
    assert read_appended_jsonl(path) == [{"id": "a", "pe": 1.0}]
    append_jsonl(path, [{"id": "c", "pe": 3.0}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "c"]


def test_a_torn_file_without_any_whole_line_reads_empty(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_bytes(b'{"id": "a"')
    assert read_appended_jsonl(path) == []
    append_jsonl(path, [{"id": "b"}])
    assert read_appended_jsonl(path) == [{"id": "b"}]


def test_failed_write_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "scores.jsonl"
    append_jsonl(path, [{"id": "a"}])
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="scores.jsonl"):
        append_jsonl(path, [{"id": "b"}] * 100)
    monkeypatch.undo()
    assert path.read_bytes() == before
