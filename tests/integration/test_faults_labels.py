"""Two label writers at once (`star label` twice, `star label` next to the page's commits): no label is
lost or given twice, and the loser of a race gets one clear message with nothing of its file imported."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from star.annotation.commit import commit_answer, import_labels
from star.annotation.queries import open_round
from star.errors import DataError
from star.store.labels import LabelStore


def _answers(folder: Path, name: str, ids: list[str], answer: str = "3") -> Path:
    path = folder / name
    path.write_text("".join(json.dumps({"id": i, "answer": answer}) + "\n" for i in ids))
    return path


def _labels(run: Path) -> list[tuple[str, str]]:
    store = LabelStore(run / "labels.sqlite")
    try:
        return [(lab.example_id, lab.annotator) for lab in store.all()]
    finally:
        store.close()


def _star_label(run: Path, file: Path, who: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "star", "label", str(run), str(file), "--annotator", who],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("attempt", range(3))
def test_two_star_label_imports_racing(tmp_path, make_waiting_run, attempt):
    """Disjoint files both land; files sharing an id: one lands whole, the other is refused whole."""
    run, ids = make_waiting_run(tmp_path, n=8)
    first = _answers(tmp_path, "a.jsonl", ids[:3])
    second = _answers(tmp_path, "b.jsonl", ids[3:6])
    procs = [_star_label(run, first, "one"), _star_label(run, second, "two")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(_labels(run)) == sorted([(i, "one") for i in ids[:3]] + [(i, "two") for i in ids[3:6]])

    third = _answers(tmp_path, "c.jsonl", ids[6:8])
    fourth = _answers(tmp_path, "d.jsonl", ids[7:8])  # shares ids[7] with the third file
    procs = [_star_label(run, third, "three"), _star_label(run, fourth, "four")]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert loser.count("error:") == 1 and "Traceback" not in loser
    assert "already" in loser  # has a committed label / a label already exists: said either way
    winner = "three" if procs[0].returncode == 0 else "four"
    won = ids[6:8] if winner == "three" else ids[7:8]
    assert sorted(i for i, _ in _labels(run)) == sorted(ids[:6] + won)  # each id once, nothing of the loser
    assert {who for i, who in _labels(run) if i in won} == {winner}


def _commit_after_barrier(run: str, file: str, who: str, barrier, results) -> None:
    """In a child process: check the file, wait for the other writer, then commit (a race on the commit itself)."""
    real = LabelStore.add_many

    def add_many(store, items, annotator, round_index):
        barrier.wait(timeout=60)
        return real(store, items, annotator, round_index)

    LabelStore.add_many = add_many
    try:
        results.put((who, import_labels(run, file, who)))
    except DataError as e:
        results.put((who, e.message))


def test_two_imports_that_both_passed_their_checks_race_on_the_commit(tmp_path, make_waiting_run):
    run, ids = make_waiting_run(tmp_path, n=4)
    files = [_answers(tmp_path, "a.jsonl", ids[:3]), _answers(tmp_path, "b.jsonl", ids[2:])]
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_commit_after_barrier, args=(str(run), str(f), who, barrier, results))
             for f, who in zip(files, ("one", "two"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = dict(results.get(timeout=5) for _ in procs)
    winner = next(who for who, r in got.items() if isinstance(r, int))
    loser = next(who for who, r in got.items() if isinstance(r, str))
    assert f"a label already exists for {ids[2]!r}" in got[loser] and "nothing of this commit was stored" in got[loser]
    won = ids[:3] if winner == "one" else ids[2:]
    assert sorted(_labels(run)) == sorted((i, winner) for i in won)


def test_star_label_while_the_page_commits(tmp_path, make_waiting_run):
    """`star annotate`'s commits (commit_answer, one transaction each) and a `star label` import at once."""
    run, ids = make_waiting_run(tmp_path, n=8)
    file = _answers(tmp_path, "a.jsonl", ids[:4])
    errors = []

    def page() -> None:
        open_ = open_round(run)
        for i in ids[4:]:
            try:
                commit_answer(open_, i, "5", "human:web")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

    thread = threading.Thread(target=page)
    proc = _star_label(run, file, "files")
    thread.start()
    out = proc.communicate(timeout=120)
    thread.join(60)
    assert proc.returncode == 0 and errors == [], (out, errors)
    assert sorted(_labels(run)) == sorted([(i, "files") for i in ids[:4]] + [(i, "human:web") for i in ids[4:]])
