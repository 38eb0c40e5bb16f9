"""A signal to `star compare --jobs N` stops its running cells too: none is left running on its own, and the grid resumes."""

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

from star.experiments.compare import Arm, compare
from star.store.runs import RunDir

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child pids from /proc (Linux)")


def _children(pid: int) -> set[int]:
    """Direct child pids of `pid`, from /proc."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.update(int(x) for x in text)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_compare_stops_its_cells_and_the_grid_resumes(tiny_run_settings, tmp_path, signum):
    base = copy.deepcopy(tiny_run_settings)
    base["al"].update(rounds=6, initial=2, query=2)  # long enough to be caught mid-run
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
    out = tmp_path / "grid"
    cmd = [sys.executable, "-m", "star", "compare", "--config", str(tmp_path / "base.yaml"), "--strategies",
           "random,pe", "--seeds", "0,1", "--jobs", "2", "--quiet", "--out", str(out)]
    # a new session: a SIGINT to the parent alone, not to a terminal's whole group (the harder case)
    parent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait(lambda: all(RunDir(out / arm / "seed-0").config_path.is_file() for arm in ("random", "pe")),
              120, "both first cells to start")
        cells = _children(parent.pid)
        assert len(cells) == 2
        parent.send_signal(signum)
        _, err = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 128 + signum, err
    assert f"star compare --resume {out}" in err
    assert not [pid for pid in cells if _alive(pid)], "a cell was left running after the grid stopped"
    assert not (out / "random" / "seed-1").exists(), "no new cell starts once the grid is stopping"
    arms = [Arm.strategy("random"), Arm.strategy("pe")]
    report = compare(base, arms, [0, 1], out, show_progress=False, jobs=2)  # the resume finishes every cell
    assert all(len(RunDir(out / a / f"seed-{s}").finished_rounds()) == 6 for a in ("random", "pe") for s in (0, 1))
    assert (report / "report.json").is_file()
