"""A real Label Studio server: push a round's tasks, annotate through its API, pull, and train on the labels.

Needs the `label-studio` executable (STAR_LABEL_STUDIO_BIN, else PATH) and label-studio-sdk; skipped
otherwise. Label Studio is heavy (~1 GB with its dependencies) and best kept in its own venv:

    python3 -m venv /tmp/lsvenv && /tmp/lsvenv/bin/pip install label-studio
    pip install "star-al[labelstudio]"
    STAR_LABEL_STUDIO_BIN=/tmp/lsvenv/bin/label-studio python -m pytest tests/integration/test_labelstudio_server.py

The server runs on loopback with a temporary data folder; its first start (database migrations)
took 60-140 s on 2 busy CPU cores (STAR_LABEL_STUDIO_START_S, default 300, is the limit).
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from star import loop
from star.cli import main
from star.config import load_config
from star.store.labels import LabelStore
from star.store.runs import RunDir
from star.tasks import build_task

START_SECONDS = float(os.environ.get("STAR_LABEL_STUDIO_START_S", "300"))


def _executable() -> str | None:
    given = os.environ.get("STAR_LABEL_STUDIO_BIN")
    return given if given and Path(given).is_file() else shutil.which("label-studio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"label-studio exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"label-studio did not answer within {START_SECONDS:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(url, API token) of a fresh Label Studio on loopback, stopped (its whole process group) afterwards."""
    exe = _executable()
    if exe is None:
        pytest.skip("no label-studio executable: set STAR_LABEL_STUDIO_BIN or put label-studio on PATH")
    pytest.importorskip("label_studio_sdk", reason='pip install "star-al[labelstudio]"')
    data, port, token = tmp_path_factory.mktemp("label-studio"), _free_port(), secrets.token_hex(20)
    log = data / "server.log"
    command = [exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port), "--data-dir",
               str(data), "--username", "star@example.com", "--password", secrets.token_hex(8), "--user-token", token,
               "--enable-legacy-api-token"]
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data)}
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _result(answer: str) -> list[dict]:
    return [{"from_name": "answer", "to_name": "question", "type": "textarea", "value": {"text": [answer]}}]


def _stored(run_dir: Path) -> dict[str, str]:
    store = LabelStore(RunDir(run_dir).labels_path)
    try:
        return {x.example_id: x.answer for x in store.all()}
    finally:
        store.close()


def test_push_annotate_pull_and_train_with_a_real_server(label_studio: tuple[str, str], tiny_run_config: dict,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    from label_studio_sdk import LabelStudio

    url, token = label_studio
    monkeypatch.setenv("STAR_TEST_LS_KEY", token)
    cfg = copy.deepcopy(tiny_run_config)
    cfg["al"] |= {"annotator": "human", "rounds": 1}
    run_dir = Path(cfg["output_dir"])
    assert loop.run(cfg, show_progress=False) == []
    task = build_task(load_config(RunDir(run_dir).config_path).task)
    gold = {e.id: task.gold_answer(e.answer) for e in task.load("pool")}
    key = ["--api-key-env", "STAR_TEST_LS_KEY"]

    assert main(["labelstudio", "push", str(run_dir), "--url", url, *key]) == 0
    assert main(["labelstudio", "push", str(run_dir), *key]) == 0  # the project is recorded; nothing new
    assert "pushed 0 task(s) of round 0 (4 already there)" in capsys.readouterr().out
    client = LabelStudio(base_url=url, api_key=token)
    project = json.loads((run_dir / "round-0" / "labelstudio" / "project.json").read_text(encoding="utf-8"))
    assert project["url"] == url and "answer" in client.projects.get(id=project["project"]).label_config
    tasks = list(client.tasks.list(project=project["project"], fields="all"))
    assert len(tasks) == 4  # each usable suggestion arrives as a prediction (a tiny random model has few)
    assert [len(t.predictions) for t in tasks] == [int(bool(t.data["suggestion"])) for t in tasks]
    ids = [t.data["star_id"] for t in tasks]

    client.annotations.create(id=tasks[0].id, result=_result(gold[ids[0]]))
    client.annotations.create(id=tasks[1].id, result=_result(gold[ids[1]]))
    bad = client.annotations.create(id=tasks[2].id, result=_result("banana"))
    client.annotations.create(id=tasks[3].id, result=[], was_cancelled=True)  # skipped
    assert main(["labelstudio", "pull", str(run_dir), *key]) == 2
    assert "not a valid arithmetic answer" in capsys.readouterr().err and _stored(run_dir) == {}

    client.annotations.update(id=bad.id, result=_result(gold[ids[2]]))
    assert main(["labelstudio", "pull", str(run_dir), *key]) == 0
    assert "imported 3 label(s)" in capsys.readouterr().out and len(_stored(run_dir)) == 3
    client.annotations.create(id=tasks[3].id, result=_result(gold[ids[3]]))
    assert main(["labelstudio", "pull", str(run_dir), *key]) == 0
    assert "imported 1 label(s)" in capsys.readouterr().out
    assert _stored(run_dir) == {i: gold[i] for i in ids}
    assert [m["labels"] for m in loop.run(resume=run_dir, show_progress=False)] == [4]
    assert len(list((run_dir / "round-0" / "labelstudio").glob("export-*.json"))) == 3  # every pull kept


def test_a_choice_task_round_trips_through_a_real_server(label_studio: tuple[str, str], tmp_path: Path,
                                                         make_waiting_run, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Choices (with characters XML must escape), a choice prediction, and disagreeing annotations refused."""
    from label_studio_sdk import LabelStudio

    from star.annotation.queries import open_round, query_row, write_batch

    url, token = label_studio
    monkeypatch.setenv("STAR_TEST_LS_KEY", token)
    choices = ['yes & "sure"', "no <way>"]
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (data / name).write_text("".join(json.dumps({"question": f"q{i}?", "answer": choices[i % 2]}) + "\n"
                                         for i in range(4)), encoding="utf-8")
    run_dir, ids = make_waiting_run(tmp_path, {"name": "jsonl", "path": str(data), "answer_type": "choice",
                                               "choices": choices}, n=2)
    open_ = open_round(run_dir)
    write_batch(open_.run, 0, "query", [query_row(open_.task, 0, r["id"], r["question"], choices[1], 0.2)
                                        for r in open_.items])
    key = ["--url", url, "--api-key-env", "STAR_TEST_LS_KEY"]
    assert main(["labelstudio", "push", str(run_dir), *key, "--title", "choices"]) == 0
    project = json.loads((run_dir / "round-0" / "labelstudio" / "project.json").read_text(encoding="utf-8"))["project"]
    client = LabelStudio(base_url=url, api_key=token)
    tasks = list(client.tasks.list(project=project, fields="all"))
    predicted = [p.result if hasattr(p, "result") else p["result"] for t in tasks for p in t.predictions]
    assert [r[0]["value"] for r in predicted] == [{"choices": [choices[1]]}] * 2

    def pick(answer: str) -> list[dict]:
        return [{"from_name": "answer", "to_name": "question", "type": "choices", "value": {"choices": [answer]}}]

    client.annotations.create(id=tasks[0].id, result=pick(choices[0]))
    client.annotations.create(id=tasks[1].id, result=pick(choices[0]))
    second = client.annotations.create(id=tasks[1].id, result=pick(choices[1]))  # a second annotator disagrees
    assert main(["labelstudio", "pull", str(run_dir), *key[2:]]) == 2
    assert "its annotations disagree" in capsys.readouterr().err and _stored(run_dir) == {}
    client.annotations.create(id=tasks[0].id, result=[], was_cancelled=True)  # noise: a skip beside an answer
    client.annotations.delete(id=second.id)
    assert main(["labelstudio", "pull", str(run_dir), *key[2:]]) == 0
    assert _stored(run_dir) == {t.data["star_id"]: choices[0] for t in tasks} and sorted(_stored(run_dir)) == sorted(ids)
