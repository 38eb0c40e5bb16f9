"""People in the loop: the run stops with a query, imported answers train it, and no kill loses a label."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from star import loop
from star.annotation.commit import import_labels
from star.annotation.queries import open_round
from star.config import load_config
from star.store.io import read_jsonl
from star.store.labels import LabelStore
from star.store.runs import RunDir
from star.tasks import build_task

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def human_config(tiny_run_config: dict) -> dict:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["al"]["annotator"] = "human"
    return cfg


def gold(run_dir: Path) -> dict[str, str]:
    """The correct answer of every pool example (what a careful person would write)."""
    task = build_task(load_config(RunDir(run_dir).config_path).task)
    return {e.id: task.gold_answer(e.answer) for e in task.load("pool")}


def answer_file(run_dir: Path, path: Path) -> dict[str, str]:
    """Write the correct answers to the open round's remaining items; return them by id."""
    answers = gold(run_dir)
    rows = {r["id"]: answers[r["id"]] for r in open_round(run_dir).remaining()}
    path.write_text("".join(json.dumps({"id": i, "answer": a}) + "\n" for i, a in rows.items()), encoding="utf-8")
    return rows


def labels(run_dir: Path) -> list[tuple[str, str, str, int]]:
    store = LabelStore(RunDir(run_dir).labels_path)
    try:
        return [(x.example_id, x.answer, x.annotator, x.round) for x in store.all()]
    finally:
        store.close()


def selected(run_dir: Path, t: int) -> set[str]:
    return {r["id"] for r in read_jsonl(RunDir(run_dir).scores_path(t)) if r["selected"]}


def check_finished(run_dir: Path, given: dict[str, tuple[str, int]], rounds: int) -> None:
    """Every given answer is in the store once, in its round, and every round has metrics."""
    stored = labels(run_dir)
    assert len(stored) == len({x[0] for x in stored}), "a label is duplicated"
    assert {x[0]: (x[1], x[3]) for x in stored} == given, "a label was lost or changed"
    for t in range(rounds):
        assert {x[0] for x in stored if x[3] == t} == selected(run_dir, t)
    metrics = RunDir(run_dir).metrics()
    assert [m["round"] for m in metrics] == list(range(rounds))
    assert [m["labels"] for m in metrics] == [4 * (t + 1) for t in range(rounds)]


def test_human_run_stops_for_labels_and_finishes_on_them(human_config: dict, tmp_path: Path) -> None:
    run_dir = Path(human_config["output_dir"])
    assert loop.run(human_config, show_progress=False) == []
    query = read_jsonl(run_dir / "round-0" / "query.jsonl")
    assert [r["id"] for r in query] == [r["id"] for r in read_jsonl(run_dir / "round-0" / "todo.jsonl")]
    assert len(query) == 4 and {r["round"] for r in query} == {0}
    assert all({"question", "suggestion", "raw_output", "score", "answer_type", "choices"} <= set(r) for r in query)
    assert (run_dir / "round-0" / "query.csv").read_text().startswith("id,question,suggestion,score,")
    mtime = (run_dir / "round-0" / "query.jsonl").stat().st_mtime_ns
    assert loop.run(resume=run_dir, show_progress=False) == []  # nothing answered: still waiting
    assert (run_dir / "round-0" / "query.jsonl").stat().st_mtime_ns == mtime  # the query is not redone
    given: dict[str, tuple[str, int]] = {}
    for t in range(3):
        rows = answer_file(run_dir, tmp_path / f"answers-{t}.jsonl")
        assert import_labels(run_dir, tmp_path / f"answers-{t}.jsonl") == 4
        given |= {i: (a, t) for i, a in rows.items()}
        metrics = loop.run(resume=run_dir, show_progress=False)
        assert len(metrics) == t + 1
    check_finished(run_dir, given, 3)
    assert {x[2] for x in labels(run_dir)} == {"human"}


def test_closed_task_suggestions_are_the_likeliest_option(human_config: dict, tmp_path: Path) -> None:
    """With eval.mode=options (a closed task's default), each suggestion is one of the task's choices, the option
    the model finds likeliest, as evaluation grades it, not a letter extracted from free text."""
    data = tmp_path / "yesno"
    data.mkdir()
    rows = [{"question": f"Is {i} even?", "answer": "yes" if i % 2 == 0 else "no"} for i in range(40)]
    for split in ("train", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = copy.deepcopy(human_config)
    cfg["task"] = {"name": "jsonl", "path": str(data), "answer_type": "choice", "choices": ["yes", "no"],
                   "pool_size": 24, "test_size": 6}
    assert loop.run(cfg, show_progress=False) == []
    query = read_jsonl(Path(cfg["output_dir"]) / "round-0" / "query.jsonl")
    assert len(query) == 4 and all(r["suggestion"] in ("yes", "no") for r in query)


# --- kill -9 ---------------------------------------------------------------------------------

_SLOW_PHASE = """
import pathlib, sys, time
import importlib
name, marker = sys.argv[1], pathlib.Path(sys.argv[2])
loop = importlib.import_module({"train_adapter": "star.loop.rounds", "score_pairs": "star.loop.scoring"}[name])
original = getattr(loop, name)
def slow(*args, **kwargs):
    marker.write_text(name)   # the phase has begun: the parent kills us now
    out = original(*args, **kwargs)
    time.sleep(120)
    return out
setattr(loop, name, slow)
from star.cli import main
sys.exit(main(["run", "--quiet", "--resume", sys.argv[3]]))
"""

_SLOW_SQL = """
import pathlib, sys, time
import star.store.labels as labels
statement, marker = sys.argv[1], pathlib.Path(sys.argv[2])
original = labels.LabelStore.__init__
def init(self, path):
    original(self, path)
    def trace(sql):
        if sql.lstrip().upper().startswith(statement):
            marker.write_text(sql[:40])   # inside the import's transaction: the parent kills us now
            time.sleep(120)
    self._db.set_trace_callback(trace)
labels.LabelStore.__init__ = init
from star.cli import main
sys.exit(main(["label", *sys.argv[3:]]))
"""


def run_and_kill(tmp_path: Path, script: str, args: list[str]) -> None:
    """Start a patched `star` process, SIGKILL it once it reaches the marked point."""
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(script), encoding="utf-8")
    marker = tmp_path / "marker"
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(runner), args[0], str(marker), *args[1:]], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert alive and marker.exists(), f"the process never reached the kill point: {err.decode()[-2000:]}"


@pytest.mark.parametrize("statement", ["INSERT", "COMMIT"])
def test_kill_9_during_import_commits_all_or_nothing(human_config: dict, tmp_path: Path, statement: str) -> None:
    run_dir = Path(human_config["output_dir"])
    loop.run(human_config, show_progress=False)
    rows = answer_file(run_dir, tmp_path / "answers.jsonl")
    run_and_kill(tmp_path, _SLOW_SQL, [statement, str(run_dir), str(tmp_path / "answers.jsonl")])
    assert labels(run_dir) == []  # killed inside the transaction: none of the file's labels
    done = subprocess.run([sys.executable, "-m", "star", "label", str(run_dir), str(tmp_path / "answers.jsonl")],
                          env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(labels(run_dir)) == sorted((i, a, "human", 0) for i, a in rows.items())


def test_kill_9_during_training_and_scoring_then_resume(human_config: dict, tmp_path: Path) -> None:
    run_dir = Path(human_config["output_dir"])
    loop.run(human_config, show_progress=False)
    given: dict[str, tuple[str, int]] = {}

    def answer(t: int) -> None:
        rows = answer_file(run_dir, tmp_path / f"answers-{t}.jsonl")
        import_labels(run_dir, tmp_path / f"answers-{t}.jsonl")
        given.update({i: (a, t) for i, a in rows.items()})

    answer(0)
    run_and_kill(tmp_path, _SLOW_PHASE, ["train_adapter", str(run_dir)])  # killed while training model 0
    assert RunDir(run_dir).finished_rounds() == []
    assert loop.run(resume=run_dir, show_progress=False)[-1]["round"] == 0  # trains 0, stops for round 1
    answer(1)
    run_and_kill(tmp_path, _SLOW_PHASE, ["score_pairs", str(run_dir)])  # trains 1, killed scoring round 2
    assert RunDir(run_dir).finished_rounds() == [0, 1]
    assert loop.run(resume=run_dir, show_progress=False)[-1]["round"] == 1  # re-scores round 2, stops
    answer(2)
    assert len(loop.run(resume=run_dir, show_progress=False)) == 3
    check_finished(run_dir, given, 3)
