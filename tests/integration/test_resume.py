"""A run interrupted anywhere and resumed ends exactly like an uninterrupted run with the same seed."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from star import loop
from star.annotation.oracle import Oracle
from star.store.io import read_jsonl
from star.store.runs import RunDir


class Crash(Exception):
    """Stands in for a kill at a chosen point."""


def _outcome(run_dir: Path) -> dict:
    """Selections, label store and metrics of a run, without wall-clock times."""
    run = RunDir(run_dir)
    rounds = run.finished_rounds()
    metrics = [{k: v for k, v in m.items() if k != "seconds"} for m in run.metrics()]
    scores = [read_jsonl(run.scores_path(t)) for t in rounds]
    from star.store.labels import LabelStore

    store = LabelStore(run.labels_path)
    labels = [(lab.example_id, lab.answer, lab.round) for lab in store.all()]
    store.close()
    return {"metrics": metrics, "scores": scores, "labels": labels}


@pytest.fixture
def reference(tiny_run_config: dict, tmp_path: Path) -> dict:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["output_dir"] = str(tmp_path / "reference")
    loop.run(cfg, show_progress=False)
    out = _outcome(tmp_path / "reference")
    assert len({row["score"] for row in out["scores"][1]}) > 1, "scores must vary, or the comparison proves little"
    return out


def _crash_once(monkeypatch: pytest.MonkeyPatch, target: object, name: str, at_call: int) -> None:
    """Make `target.name` raise Crash on its `at_call`-th call (0-based), once."""
    original = getattr(target, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] - 1 == at_call:
            raise Crash(f"{name} call {at_call}")
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


@pytest.mark.parametrize(
    ("target", "name", "at_call"),
    [
        (loop.scoring, "score_pairs", 1),  # while scoring the pool for round 1 (after base scores)
        (loop.rounds, "train_adapter", 1),  # while training model 1
        (loop.rounds, "evaluate", 2),  # while evaluating model 2
        (loop.rounds, "save_adapter", 0),  # while saving model 0
        (loop.rounds, "write_json", 1),  # just before round 1's metrics.json lands
    ],
)
def test_resume_after_crash_matches_uninterrupted(tiny_run_config, tmp_path, monkeypatch, reference, target, name, at_call):
    cfg = copy.deepcopy(tiny_run_config)
    cfg["output_dir"] = str(tmp_path / "crashed")
    with monkeypatch.context() as m:
        _crash_once(m, target, name, at_call)
        with pytest.raises(Crash):
            loop.run(cfg, show_progress=False)
    loop.run(resume=cfg["output_dir"], show_progress=False)
    assert _outcome(tmp_path / "crashed") == reference


def test_resume_after_crash_mid_labelling_keeps_labels_and_reads_each_once(tiny_run_config, tmp_path, monkeypatch, reference):
    cfg = copy.deepcopy(tiny_run_config)
    cfg["output_dir"] = str(tmp_path / "crashed")
    original = Oracle.annotate

    def partial(self, ids, store, round_index):
        if round_index == 1 and len(store.in_round(1)) == 0:
            original(self, ids[:2], store, round_index)  # two labels committed, then the process dies
            raise Crash("mid-labelling")
        return original(self, ids, store, round_index)

    monkeypatch.setattr(Oracle, "annotate", partial)
    with pytest.raises(Crash):
        loop.run(cfg, show_progress=False)
    loop.run(resume=cfg["output_dir"], show_progress=False)
    out = _outcome(tmp_path / "crashed")
    assert out == reference
    ids = [lab[0] for lab in out["labels"]]
    assert len(ids) == len(set(ids))


def test_kill_9_during_run_then_resume(tiny_run_config, tmp_path, reference):
    """A real SIGKILL while round 1 is in progress; `star run --resume` finishes identically."""
    cfg = copy.deepcopy(tiny_run_config)
    cfg["output_dir"] = str(tmp_path / "killed")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "star", "run", "--quiet", "--config", str(config_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = Path(cfg["output_dir"]) / "round-1" / "scores.jsonl"
    deadline = time.time() + 120
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run([sys.executable, "-m", "star", "run", "--quiet", "--resume", cfg["output_dir"]], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert _outcome(Path(cfg["output_dir"])) == reference
