"""Two processes (gloo on CPU, launched by accelerate) select and score exactly like one process."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from star.runs import RunDir, read_jsonl

pytestmark = pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _star(args: list[str], processes: int, tmp_path: Path, flag: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if processes == 1 or flag:  # flag: star's own --num-processes, which goes through accelerate launch
        cmd = [sys.executable, "-m", "star", *args, *(["--num-processes", str(processes)] if flag else [])]
    else:
        launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
        cmd = [launcher, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), "-m", "star", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)


_TEARDOWN_ABORT = "terminate called without an active exception"


def _failure_report(done: subprocess.CompletedProcess) -> str:
    """The main process's own error first (a peer's 'connection closed' is only its echo), then the tail."""
    rank0 = [line for line in done.stderr.splitlines() if line.startswith("[rank0]")]
    return "\n".join(rank0[-60:]) + "\n--- stderr tail ---\n" + done.stderr[-3000:]


def test_two_processes_match_one(tiny_run_config: dict, tmp_path: Path) -> None:
    outcomes = {}
    for processes, flag in ((1, False), (2, False), (2, True)):
        name = f"p{processes}" + ("-flag" if flag else "")
        cfg = copy.deepcopy(tiny_run_config)
        cfg["output_dir"] = str(tmp_path / name)
        cfg["al"]["batch_size"] = 4  # several batches, so that both processes get work
        cfg["train"]["batch_size"] = 4
        cfg["train"]["precision"] = cfg["al"]["precision"] = "fp32"  # bf16 rounding depends on the batch split: docs/scaling.md
        config_file = tmp_path / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump(cfg))
        done = _star(["run", "--quiet", "--config", str(config_file)], processes, tmp_path, flag)
        if done.returncode != 0 and _TEARDOWN_ABORT in done.stderr:
            # An open bug (docs/scaling.md, "Known problems"): rarely, a gloo worker process aborts in
            # C++ ("terminate called without an active exception"). Retried once, from scratch, so
            # the identity checked below is still that of complete runs.
            shutil.rmtree(cfg["output_dir"], ignore_errors=True)
            done = _star(["run", "--quiet", "--config", str(config_file)], processes, tmp_path, flag)
        assert done.returncode == 0, _failure_report(done)
        run = RunDir(cfg["output_dir"])
        assert run.finished_rounds() == [0, 1, 2]
        outcomes[name] = run
    one, two = outcomes["p1"], outcomes["p2"]
    by_flag = outcomes["p2-flag"]  # `star run --num-processes 2` is the same launch: the same results
    for t in (1, 2):
        assert read_jsonl(by_flag.scores_path(t)) == read_jsonl(two.scores_path(t))
        a, b = read_jsonl(one.scores_path(t)), read_jsonl(two.scores_path(t))
        assert [r["id"] for r in a] == [r["id"] for r in b]
        assert [r["selected"] for r in a] == [r["selected"] for r in b]
        for key in ("u_base", "u_full"):
            np.testing.assert_allclose([r[key] for r in a], [r[key] for r in b], rtol=1e-5)
        # The tiny random model's scores span ~1e-4 of their value, so min-max normalisation
        # magnifies float noise; the ranked values still agree closely and the selections exactly.
        np.testing.assert_allclose([r["score"] for r in a], [r["score"] for r in b], atol=2e-2)
    for m1, m2 in zip(one.metrics(), two.metrics()):
        assert m1["labels"] == m2["labels"] and m1["label_reads"] == m2["label_reads"]
        assert m1["accuracy"] == pytest.approx(m2["accuracy"]) and m1["ece"] == pytest.approx(m2["ece"], abs=1e-4)
        assert m1["train"]["final_loss"] == pytest.approx(m2["train"]["final_loss"], rel=1e-4)


def test_num_processes_checks_the_config_before_launching_anything(tmp_path: Path, monkeypatch, capsys) -> None:
    from star import distributed
    from star.cli import main

    launched = []
    monkeypatch.setattr(distributed, "relaunch", lambda n, args: launched.append((n, args)) or 0)
    assert main(["run", "--num-processes", "2", "al.rounds=0", f"output_dir={tmp_path / 'r'}"]) == 2
    assert "al.rounds" in capsys.readouterr().err and launched == []
    assert main(["run", "-n", "2", "--quiet", "al.rounds=2", f"output_dir={tmp_path / 'r'}"]) == 0
    assert launched == [(2, ["run", "--quiet", "al.rounds=2", f"output_dir={tmp_path / 'r'}"])]
    monkeypatch.setattr(distributed, "relaunch", lambda n, args: 3)  # a failed launch's exit code comes through
    assert main(["run", "-n", "2", f"output_dir={tmp_path / 'r'}"]) == 3
