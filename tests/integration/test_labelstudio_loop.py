"""A human run labelled through Label Studio: export/import files in round 0, push/pull (a fake SDK client) in round 1."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from labelstudio_helpers import FakeLabelStudio, ls_export, write_export

from star import loop
from star.annotation.labelstudio_sync import pull_round, push_round
from star.annotation.queries import open_round
from star.cli import main
from star.config import load_config
from star.store.io import read_jsonl
from star.store.labels import LabelStore
from star.store.runs import RunDir
from star.tasks import build_task


@pytest.fixture
def human_config(tiny_run_config: dict) -> dict:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["al"] |= {"annotator": "human", "rounds": 2}
    return cfg


def gold(run_dir: Path) -> dict[str, str]:
    """The correct answer of every pool example, as a careful annotator would type it."""
    task = build_task(load_config(RunDir(run_dir).config_path).task)
    return {e.id: task.gold_answer(e.answer) for e in task.load("pool")}


def stored(run_dir: Path) -> dict[str, tuple[str, str, int]]:
    store = LabelStore(RunDir(run_dir).labels_path)
    try:
        return {x.example_id: (x.answer, x.annotator, x.round) for x in store.all()}
    finally:
        store.close()


def test_a_run_trains_on_labels_given_in_label_studio(human_config: dict, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    run_dir = Path(human_config["output_dir"])
    assert loop.run(human_config, show_progress=False) == []  # round 0 selected, waits for labels
    answers = gold(run_dir)

    # round 0: files. Export, annotate (one annotator per task, one skipped first), import.
    assert main(["labelstudio", "export", str(run_dir)]) == 0
    tasks = json.loads((run_dir / "round-0" / "labelstudio" / "tasks.json").read_text(encoding="utf-8"))
    ids = [t["data"]["star_id"] for t in tasks]
    assert ids == [r["id"] for r in open_round(run_dir).items] and len(ids) == 4
    partial = {i: [answers[i]] for i in ids[:3]} | {ids[3]: [None]}
    assert main(["labelstudio", "import", str(run_dir), str(write_export(tmp_path / "a.json", ls_export(tasks, partial)))]) == 0
    assert "1 skipped in Label Studio" in capsys.readouterr().out
    assert loop.run(resume=run_dir, show_progress=False) == []  # one item still open: no training yet
    full = partial | {ids[3]: [None, answers[ids[3]]]}  # a second annotator answered the skipped one
    assert main(["labelstudio", "import", str(run_dir), str(write_export(tmp_path / "b.json", ls_export(tasks, full)))]) == 0
    metrics = loop.run(resume=run_dir, show_progress=False)
    assert [m["labels"] for m in metrics] == [4]

    # round 1: push into a project, annotate there, pull, train.
    client = FakeLabelStudio()
    pushed = push_round(client, run_dir, "http://ls.test")
    assert (pushed.round_index, pushed.pushed) == (1, 4)
    round1 = [t["data"]["star_id"] for t in client.tasks_of[pushed.project]]
    assert set(round1) == {r["id"] for r in read_jsonl(RunDir(run_dir).scores_path(1)) if r["selected"]}
    client.given = {i: [answers[i]] for i in round1}
    _, report = pull_round(client, run_dir, "http://ls.test", pushed.project)
    assert report.committed == 4
    metrics = loop.run(resume=run_dir, show_progress=False)
    assert [m["labels"] for m in metrics] == [4, 8]

    labels = stored(run_dir)
    assert labels == {i: (answers[i], "label-studio", 0) for i in ids} | {i: (answers[i], "label-studio", 1) for i in round1}
