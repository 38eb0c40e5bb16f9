"""The SQLite label store and the simulated oracle's read accounting."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import pytest

from star.annotation.oracle import Oracle
from star.errors import DataError
from star.store.labels import LabelStore
from star.tasks.base import Example


@pytest.fixture
def store(tmp_path: Path) -> LabelStore:
    s = LabelStore(tmp_path / "sub" / "labels.sqlite")
    yield s
    s.close()


def ids(labels) -> list[str]:
    return [lab.example_id for lab in labels]


def snapshot(store: LabelStore) -> list[tuple]:
    return [(x.example_id, x.answer, x.annotator, x.round) for x in store.all()]


# --- LabelStore ------------------------------------------------------------------------------


def test_add_and_get(store: LabelStore) -> None:
    label = store.add("ex-1", "42", "oracle", 0)
    assert (label.example_id, label.answer, label.annotator, label.round) == ("ex-1", "42", "oracle", 0)
    got = store.get("ex-1")
    assert got == label
    assert store.get("ex-2") is None
    assert len(store) == 1


def test_in_round_and_up_to(store: LabelStore) -> None:
    store.add_many([("a", "1"), ("b", "2")], "oracle", 0)
    store.add_many([("c", "3")], "oracle", 1)
    store.add("d", "4", "human", 2)
    assert ids(store.in_round(0)) == ["a", "b"]
    assert ids(store.in_round(1)) == ["c"]
    assert ids(store.in_round(3)) == []
    assert ids(store.up_to(0)) == ["a", "b"]
    assert ids(store.up_to(1)) == ["a", "b", "c"]
    assert ids(store.up_to(2)) == ["a", "b", "c", "d"]
    assert ids(store.all()) == ["a", "b", "c", "d"]
    assert store.get("d").annotator == "human"


def test_rounds_are_ordered_by_round_not_insertion(store: LabelStore) -> None:
    store.add("late", "x", "oracle", 1)
    store.add("early", "y", "oracle", 0)
    assert ids(store.up_to(1)) == ["early", "late"]


def test_duplicate_id_raises_and_leaves_the_store_unchanged(store: LabelStore) -> None:
    store.add("a", "1", "oracle", 0)
    before = snapshot(store)
    with pytest.raises(DataError) as info:
        store.add("a", "other", "human", 1)
    assert "a" in str(info.value)
    assert snapshot(store) == before
    assert store.get("a").answer == "1"
    # The store is still usable after the refused write.
    store.add("b", "2", "oracle", 1)
    assert ids(store.all()) == ["a", "b"]


def test_add_many_is_all_or_nothing(store: LabelStore) -> None:
    store.add("a", "1", "oracle", 0)
    before = snapshot(store)
    with pytest.raises(DataError):
        store.add_many([("x", "1"), ("y", "2"), ("a", "3")], "oracle", 1)  # clashes with a committed id
    assert snapshot(store) == before
    with pytest.raises(DataError):
        store.add_many([("p", "1"), ("q", "2"), ("p", "3")], "oracle", 1)  # duplicate inside the batch
    assert snapshot(store) == before
    assert store.get("x") is None and store.get("p") is None
    added = store.add_many([("x", "1"), ("y", "2")], "oracle", 1)
    assert ids(added) == ["x", "y"] and len(store) == 3


def test_add_many_of_nothing_is_a_no_op(store: LabelStore) -> None:
    assert store.add_many([], "oracle", 0) == []
    assert len(store) == 0


def test_labels_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "labels.sqlite"
    first = LabelStore(path)
    first.add_many([("a", "1"), ("b", "two words\nand a line")], "oracle", 0)
    first.add("c", "3", "human", 1)
    before = first.all()
    first.close()
    second = LabelStore(path)
    try:
        assert second.all() == before
        assert second.get("b").answer == "two words\nand a line"
        with pytest.raises(DataError):
            second.add("a", "again", "oracle", 2)  # uniqueness holds across sessions
        assert len(second) == 3
    finally:
        second.close()


# --- Oracle ----------------------------------------------------------------------------------


def pool() -> list[Example]:
    return [Example(f"e{i}", f"question {i}", f"answer {i}") for i in range(6)]


def _open_after(path: Path, start: multiprocessing.synchronize.Barrier, jitter: float,
                outcome: multiprocessing.Queue) -> None:
    start.wait()
    time.sleep(jitter)
    try:
        LabelStore(path).close()
        outcome.put("ok")
    except Exception as e:  # noqa: BLE001 - reported back to the test
        outcome.put(repr(e))


def test_two_processes_opening_one_fresh_store_both_succeed(tmp_path: Path) -> None:
    """Every process of a multi-process run opens the store; a fresh file must not answer "database is locked"."""
    ctx, rng, failures = multiprocessing.get_context("fork"), random.Random(0), []
    for attempt in range(60):  # the race needs the two opens within ~1 ms: jitter covers that window
        path, start, outcome = tmp_path / f"{attempt}.sqlite", ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_open_after, args=(path, start, rng.random() * 0.003, outcome)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        failures += [r for r in (outcome.get(timeout=5), outcome.get(timeout=5)) if r != "ok"]
    assert failures == []


def test_oracle_counts_one_read_per_newly_labelled_id(store: LabelStore) -> None:
    oracle = Oracle(pool())
    labels = oracle.annotate(["e0", "e3"], store, 0)
    assert oracle.reads == 2 and oracle.peeks == 0
    assert [(x.example_id, x.answer, x.annotator, x.round) for x in labels] == [
        ("e0", "answer 0", "oracle", 0), ("e3", "answer 3", "oracle", 0)]
    assert store.get("e3").answer == "answer 3"
    oracle.annotate(["e1"], store, 1)
    assert oracle.reads == 3
    assert ids(store.in_round(1)) == ["e1"]


def test_oracle_never_rereads_ids_already_in_the_store(store: LabelStore) -> None:
    oracle = Oracle(pool())
    store.add("e2", "a person's answer", "human", 0)
    oracle.annotate(["e0", "e1"], store, 0)
    assert oracle.reads == 2
    labels = oracle.annotate(["e0", "e2", "e4", "e4"], store, 1)  # e0 / e2 committed; e4 asked twice
    assert ids(labels) == ["e4"]
    assert oracle.reads == 3
    assert store.get("e2").answer == "a person's answer"  # not overwritten with the gold label
    assert store.get("e0").round == 0
    assert len(store) == 4
    assert oracle.annotate(["e0", "e1", "e2", "e4"], store, 2) == []
    assert oracle.reads == 3


def test_oracle_peek_counts_separately_and_writes_nothing(store: LabelStore) -> None:
    oracle = Oracle(pool())
    assert oracle.peek(["e5", "e1", "e5"]) == ["answer 5", "answer 1", "answer 5"]
    assert oracle.peeks == 3 and oracle.reads == 0
    assert len(store) == 0
    oracle.annotate(["e5"], store, 0)
    assert oracle.reads == 1 and oracle.peeks == 3


def test_correct_many_of_an_unlabelled_id_changes_nothing(store: LabelStore) -> None:
    store.add_many([("a", "1"), ("b", "2")], "oracle", 0)
    with pytest.raises(DataError, match="no label to correct"):
        store.correct_many([("a", "9"), ("zz", "3")], "human")
    assert snapshot(store) == [("a", "1", "oracle", 0), ("b", "2", "oracle", 0)] and store.history() == []
