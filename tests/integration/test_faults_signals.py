"""SIGTERM / SIGINT to a real `star run` (1 process, and 2 gloo processes): it stops, says where, exits
non-zero with no process left behind, and `star run --resume` ends as the uninterrupted run does."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_faults import outcome

from star import loop
from star.store.runs import RunDir


@pytest.fixture(scope="module")
def config(tiny_model_dir: Path) -> dict:
    """conftest's tiny run with 5 rounds (so that a signal sent at a marker file lands inside the run), in fp32
    (a 2-process run selects what one process selects: docs/scaling.md)."""
    return {
        "seed": 0,
        "model": {"name": str(tiny_model_dir), "threads": 1},
        "task": {"name": "arithmetic", "pool_size": 32, "test_size": 6, "max_steps": 2},
        "al": {"initial": 4, "query": 4, "rounds": 5, "strategy": "pe-dynamic", "mc_passes": 2,
               "batch_size": 4, "max_new_tokens": 8, "precision": "fp32"},
        "lora": {"r": 2, "alpha": 4, "dropout": 0.1},
        "train": {"epochs": 1, "batch_size": 3, "max_prompt_tokens": 96, "max_answer_tokens": 48, "precision": "fp32"},
        "eval": {"max_new_tokens": 8, "batch_size": 8},
    }


@pytest.fixture(scope="module")
def reference(config: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("reference") / "run"
    loop.run({**config, "output_dir": str(folder)}, show_progress=False)
    return outcome(folder)


def _start(config: dict, tmp_path: Path, processes: int = 1) -> tuple[subprocess.Popen, Path]:
    run = tmp_path / "run"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({**copy.deepcopy(config), "output_dir": str(run)}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    more = ["--num-processes", str(processes)] if processes > 1 else []
    proc = subprocess.Popen([sys.executable, "-m", "star", "run", "--quiet", "--config", str(config_file), *more],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    return proc, run


def _wait_for(proc: subprocess.Popen, marker: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal: " + proc.communicate()[1][-2000:]


@pytest.mark.parametrize(("marker", "signum"), [
    ("config.yaml", signal.SIGTERM),  # round 0 starts
    ("round-0/scores.jsonl", signal.SIGTERM),  # round 0 labels, trains
    ("round-1/scores.jsonl", signal.SIGTERM),  # round 1 labels, trains
    ("round-2/metrics.json", signal.SIGTERM),  # round 3 scores the pool
    ("round-1/adapter", signal.SIGINT),  # Ctrl+C while round 1 evaluates
])
def test_a_signal_stops_a_run_which_resumes_to_the_same_end(config, reference, tmp_path, marker, signum):
    proc, run = _start(config, tmp_path)
    _wait_for(proc, run / marker)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"stopped: interrupted by {signal.Signals(signum).name} in " in err and "Traceback" not in err
    assert f"star run --resume {run}" in err
    assert not list(run.rglob(".*.tmp"))
    loop.run(resume=str(run), show_progress=False)
    assert outcome(run) == reference


# --- two processes ----------------------------------------------------------------------------

needs_accelerate = pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI not installed")


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _resume_two(run: Path, cwd: Path) -> None:
    """`star run --resume RUN --num-processes 2`, to its end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "star", "run", "--quiet", "--resume", str(run), "--num-processes", "2"],
                          env=env, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def reference_two(config: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted 2-process run. Its scores equal one process's only to float tolerance
    (tests/integration/test_distributed.py), and this tiny model's near-equal uncertainties let that noise
    flip a pick by round 3, so an interrupted 2-process run is compared with this one, not with `reference`."""
    folder = tmp_path_factory.mktemp("reference-two")
    proc, run = _start(config, folder, processes=2)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return outcome(run)


def _selections(scores: list[bytes]) -> list[list[str]]:
    """The selected ids of each round, from its scores.jsonl."""
    return [[row["id"] for row in map(json.loads, data.decode("utf-8").splitlines()) if row["selected"]]
            for data in scores]


@needs_accelerate
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
@pytest.mark.parametrize("target, marker", [
    ("launcher", "round-1/scores.jsonl"),  # round 1 selected: labelling, training
    ("worker", "round-1/scores.jsonl"),
    ("worker", "round-0/scores.jsonl"),  # round 0 drawn: training the first model
    ("launcher", "round-2/metrics.json"),  # round 2 done: scoring the pool for round 3
])
def test_sigterm_to_a_two_process_run_stops_every_process_and_it_resumes(config, reference_two, tmp_path, target,
                                                                        marker):
    proc, run = _start(config, tmp_path, processes=2)
    _wait_for(proc, run / marker)
    tree = _descendants(proc.pid)
    workers = [p for p in tree if _descendants(p) == set() and "star" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2, tree
    os.kill(proc.pid if target == "launcher" else max(workers), signal.SIGTERM)
    started = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err[-3000:]
    assert re.search(r"stopped: interrupted by SIGTERM in round \d", err), err[-3000:]  # the phase: wherever it landed
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in tree if _alive(p)], "processes left behind"
    assert time.monotonic() - started < 60, "the processes did not leave together"
    _resume_two(run, tmp_path)  # resumed as it was launched: the same selections as the uninterrupted launch
    ours = outcome(run)
    rounds = range(len(reference_two["metrics"]))
    assert RunDir(run).finished_rounds() == list(rounds)
    assert _selections([ours["files"][f"{t}/scores.jsonl"] for t in rounds]) == \
        _selections([reference_two["files"][f"{t}/scores.jsonl"] for t in rounds])
    assert ours["labels"] == reference_two["labels"]


# --- one writer per run, for real ---------------------------------------------------------------

SLOW_STAR = """
import sys, time
import star.loop.rounds as loop  # run() looks run_round up here
real = loop.run_round
def slow(exp, t):  # a run that takes its time: each round waits a second first
    time.sleep(1.0)
    return real(exp, t)
loop.run_round = slow
from star.cli import entry
entry()
"""


def test_a_second_star_run_resume_is_refused_while_the_first_writes(config, reference, tmp_path):
    run = tmp_path / "run"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({**copy.deepcopy(config), "output_dir": str(run)}))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", SLOW_STAR, "run", "--quiet", "--config", str(config_file)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while f'"pid": {first.pid}' not in ((run / "run.lock").read_text() if (run / "run.lock").exists() else "") \
            and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "star", "run", "--quiet", "--resume", str(run)], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert first.poll() is None, "the first run must still be writing"
    assert second.returncode == 2 and f"is being written by another process: pid {first.pid} on host" in second.stderr
    assert "Traceback" not in second.stderr and second.stderr.count("error:") == 1
    first.send_signal(signal.SIGTERM)  # the first stops; its lock goes with it
    assert first.wait(timeout=120) == 128 + signal.SIGTERM
    loop.run(resume=str(run), show_progress=False)
    assert outcome(run) == reference
