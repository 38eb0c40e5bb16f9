"""Label Studio round trip without a model: the labeling config, the tasks, and the all-or-nothing import."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from labelstudio_helpers import FakeLabelStudio, ls_export, write_export

from star.annotation.commit import import_labels
from star.annotation.labelstudio import export_labelstudio, labeling_config
from star.annotation.labelstudio_import import import_labelstudio
from star.annotation.labelstudio_sync import connect, pull_round, push_round, resolve
from star.annotation.queries import open_round, query_row, write_batch
from star.cli import main
from star.config import TaskConfig
from star.errors import ConfigError, DataError, RunStateError
from star.store.io import write_json
from star.store.labels import LabelStore
from star.tasks import build_task


@pytest.fixture
def run(tmp_path: Path, make_waiting_run) -> tuple[Path, list[str]]:
    """Arithmetic run waiting for round 0's 4 labels; every suggestion is '3'."""
    return make_waiting_run(tmp_path, n=4, rounds=3)


def snapshot(run_dir: Path) -> list[tuple]:
    store = LabelStore(run_dir / "labels.sqlite")
    try:
        return [(x.example_id, x.answer, x.annotator, x.round) for x in store.all()]
    finally:
        store.close()


def exported_tasks(run_dir: Path) -> list[dict]:
    return json.loads(export_labelstudio(run_dir).tasks_path.read_text(encoding="utf-8"))


def choice_data(tmp_path: Path, choices: list[str]) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        lines = [json.dumps({"question": f"q{i} <b>&", "answer": choices[i % len(choices)]}) for i in range(6)]
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def file_task(tmp_path: Path, name: str, answer: str):
    folder = tmp_path / name
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text(json.dumps({"question": "q?", "answer": answer}) + "\n")
    return build_task(TaskConfig(name=name, path=str(folder), pool_size=1, test_size=1))


# --- the labeling config and the tasks ------------------------------------------------------------


def test_labeling_config_has_choices_for_closed_tasks_and_a_text_area_for_free_answers(tmp_path: Path) -> None:
    tricky = ['a & "b"', "<c>", "d"]
    tasks = {"arithmetic": build_task(TaskConfig()), "obqa": file_task(tmp_path, "obqa", "A"),
             "boolq": file_task(tmp_path, "boolq", "the correct answer is true"),
             "jsonl": build_task(TaskConfig(name="jsonl", path=str(choice_data(tmp_path, tricky)),
                                            answer_type="choice", choices=tricky, pool_size=2, test_size=2))}
    expected = {"arithmetic": None, "obqa": ["A", "B", "C", "D"], "boolq": ["true", "false"], "jsonl": tricky}
    for name, task in tasks.items():
        view = ET.fromstring(labeling_config(task))
        controls = [el for el in view.iter() if el.get("name") == "answer"]
        assert len(controls) == 1 and controls[0].get("toName") == "question", name
        if expected[name] is None:
            assert controls[0].tag == "TextArea" and controls[0].get("maxSubmissions") == "1"
        else:
            assert controls[0].tag == "Choices" and controls[0].get("choice") == "single-radio"
            assert [c.get("value") for c in controls[0]] == expected[name], name
        variables = {el.get("value")[1:] for el in view.iter() if (el.get("value") or "").startswith("$")}
        assert variables == {"question", "star_id", "model_output"}


def test_export_writes_the_unlabelled_items_with_the_suggestion_as_a_prediction(run, tmp_path: Path) -> None:
    run_dir, ids = run
    (tmp_path / "one.jsonl").write_text(json.dumps({"id": ids[0], "answer": "5"}) + "\n")
    import_labels(run_dir, tmp_path / "one.jsonl")
    done = export_labelstudio(run_dir)
    assert done.config_path == run_dir / "round-0" / "labelstudio" / "labeling-config.xml" and done.count == 3
    tasks = json.loads(done.tasks_path.read_text(encoding="utf-8"))
    query = {r["id"]: r for r in open_round(run_dir).items}
    assert [t["data"]["star_id"] for t in tasks] == ids[1:]
    for t in tasks:
        row = query[t["data"]["star_id"]]
        assert t["data"] == {"question": row["question"], "star_id": row["id"], "star_round": 0, "star_score": 0.5,
                             "suggestion": "3", "model_output": "The final answer is 3"}
        assert t["predictions"] == [{"model_version": "star round 0", "result": [
            {"from_name": "answer", "to_name": "question", "type": "textarea", "value": {"text": ["3"]}}]}]
    assert main(["labelstudio", "export", str(run_dir), "--out", str(tmp_path / "ls")]) == 0
    assert json.loads((tmp_path / "ls" / "tasks.json").read_text(encoding="utf-8")) == tasks


def test_choice_suggestions_become_choice_predictions_only_when_valid(tmp_path: Path, make_waiting_run) -> None:
    run_dir, _ = make_waiting_run(tmp_path, {"name": "jsonl", "path": str(choice_data(tmp_path, ["yes", "no"])),
                                               "answer_type": "choice", "choices": ["yes", "no"]}, n=2)
    open_ = open_round(run_dir)
    outputs = ["Yes, it is.", "I do not know"]
    write_batch(open_.run, 0, "query", [query_row(open_.task, 0, r["id"], r["question"], out, 0.1)
                                        for r, out in zip(open_.items, outputs)])
    tasks = exported_tasks(run_dir)
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["yes"]}
    assert tasks[0]["predictions"][0]["result"][0]["type"] == "choices"
    assert tasks[1]["predictions"] == [] and tasks[1]["data"]["suggestion"] == ""
    assert tasks[0]["data"]["question"].endswith("<b>&")  # shown as text by Label Studio, kept verbatim


def test_nothing_left_to_export(run, tmp_path: Path) -> None:
    run_dir, ids = run
    (tmp_path / "all.jsonl").write_text("".join(json.dumps({"id": i, "answer": "1"}) + "\n" for i in ids))
    import_labels(run_dir, tmp_path / "all.jsonl")
    with pytest.raises(RunStateError, match="every item labelled") as info:
        export_labelstudio(run_dir)
    assert f"star run --resume {run_dir}" in info.value.hint


# --- importing Label Studio's export ---------------------------------------------------------------


def test_import_commits_answers_leaves_skipped_and_unannotated_open_and_is_idempotent(run, tmp_path: Path) -> None:
    run_dir, ids = run
    export = ls_export(exported_tasks(run_dir), {ids[0]: ["14"], ids[1]: [None], ids[3]: ["#### 7", "7", None]})
    file = write_export(tmp_path / "export.json", export)
    report = import_labelstudio(run_dir, file)
    assert (report.committed, report.already, report.skipped, report.unanswered) == (2, 0, [ids[1]], [ids[2]])
    assert snapshot(run_dir) == [(ids[0], "14", "label-studio", 0), (ids[3], "#### 7", "label-studio", 0)]
    assert {r["id"] for r in open_round(run_dir).remaining()} == {ids[1], ids[2]}
    again = import_labelstudio(run_dir, file, annotator="someone-else")  # a newer export of the same project
    assert (again.committed, again.already) == (0, 2)
    assert snapshot(run_dir) == [(ids[0], "14", "label-studio", 0), (ids[3], "#### 7", "label-studio", 0)]


def test_import_cli_says_what_it_did_and_what_is_next(run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir, ids = run
    file = write_export(tmp_path / "e.json", ls_export(exported_tasks(run_dir), {i: ["2"] for i in ids}))
    assert main(["labelstudio", "import", str(run_dir), str(file), "--annotator", "ls:alice"]) == 0
    out = capsys.readouterr().out
    assert f"imported 4 label(s) into round 0 of {run_dir}" in out and f"next: star run --resume {run_dir}" in out
    assert {x[2] for x in snapshot(run_dir)} == {"ls:alice"}


def test_tasks_of_earlier_rounds_are_ignored(run, tmp_path: Path) -> None:
    run_dir, ids = run
    round0 = exported_tasks(run_dir)
    (tmp_path / "r0.jsonl").write_text("".join(json.dumps({"id": i, "answer": "1"}) + "\n" for i in ids))
    import_labels(run_dir, tmp_path / "r0.jsonl")
    open_ = open_round(run_dir)
    write_json(run_dir / "round-0" / "metrics.json", {"round": 0})  # round 0 is done; round 1 queries 2 more
    pool = [e for e in open_.task.load("pool") if e.id not in ids][:2]
    write_batch(open_.run, 1, "query", [query_row(open_.task, 1, e.id, e.question, "3", 0.9) for e in pool])
    round1 = exported_tasks(run_dir)
    assert [t["data"]["star_round"] for t in round1] == [1, 1]
    given = {ids[0]: ["999"], pool[0].id: ["8"]}  # round 0's task now disagrees with its label: not our business
    report = import_labelstudio(run_dir, write_export(tmp_path / "e.json", ls_export(round0 + round1, given)))
    assert (report.committed, report.earlier, report.round_index) == (1, 4, 1)
    assert snapshot(run_dir)[-1] == (pool[0].id, "8", "label-studio", 1)


# --- all or nothing: every problem named by its task, nothing committed ------------------------------


def _foreign(tasks: list[dict]) -> list[dict]:
    return [{**tasks[0], "data": {**tasks[0]["data"], "star_id": "pool-999999"}}]


def _other_run(tasks: list[dict]) -> list[dict]:
    return [{**tasks[0], "data": {**tasks[0]["data"], "question": "Another run's question?"}}]


def _not_star(tasks: list[dict]) -> list[dict]:
    return [{**tasks[0], "data": {"text": "a task someone added by hand"}}]


ERROR_CASES = {  # name: (tasks -> tasks, answers by id index, expected text, the fix's text)
    "unknown id": (_foreign, {"pool-999999": ["1"]}, "'pool-999999' is not in round 0's query", "delete the task"),
    "another run": (_other_run, {0: ["1"]}, "question differs", "import it into the run it came from"),
    "not a star task": (_not_star, {}, "has no star_id and star_round", "star labelstudio export"),
    "invalid answer": (None, {0: ["banana"]}, "not a valid arithmetic answer", "write the final number"),
    "empty answer": (None, {0: ["  "]}, "answer is empty", "write the final number"),
    "conflict": (None, {0: ["3", "#### 4"]}, "its annotations disagree: '3' (annotation 100), '#### 4' (annotation 101)",
                 "keep one answer"),
    "no answer given": (None, {0: [[]]}, "annotation 100 has no answer", "or skip the task"),
    "two texts": (None, {0: [[{"from_name": "answer", "type": "textarea", "value": {"text": ["1", "2"]}}]]},
                  "must give exactly one answer", "write the final number"),
    "two results": (None, {0: [[{"from_name": "answer", "value": {"text": ["1"]}}] * 2]}, "gives 2 answers", "skip"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_a_bad_task_imports_nothing_and_names_task_and_fix(run, tmp_path: Path, case: str) -> None:
    run_dir, ids = run
    change, given, expected, fix = ERROR_CASES[case]
    tasks = exported_tasks(run_dir)
    bad = change(tasks) if change else tasks[:1]
    good = [t for t in tasks if t["data"]["star_id"] != ids[0]]
    given = {(ids[k] if isinstance(k, int) else k): v for k, v in given.items()} | {i: ["5"] for i in ids[1:]}
    file = write_export(tmp_path / "export.json", ls_export(bad + good, given))
    with pytest.raises(DataError) as info:
        import_labelstudio(run_dir, file)
    message = info.value.message
    assert snapshot(run_dir) == [], "an import with a bad task committed something"
    assert f"{file}: task #1 (Label Studio id 1" in message and expected in message and fix in message, message
    assert "nothing was imported" in message and "export (or pull) again" in info.value.hint


def test_duplicate_and_relabelled_ids_are_refused_with_every_problem_listed(run, tmp_path: Path) -> None:
    run_dir, ids = run
    tasks = exported_tasks(run_dir)
    (tmp_path / "one.jsonl").write_text(json.dumps({"id": ids[3], "answer": "5"}) + "\n")
    import_labels(run_dir, tmp_path / "one.jsonl")
    before = snapshot(run_dir)
    export = ls_export(tasks[:3] + tasks[:1], {ids[0]: ["1"], ids[1]: ["2"], ids[2]: ["x"]})
    export += ls_export([{"data": {**tasks[0]["data"], "star_id": ids[3]}}], {ids[3]: ["6"]}, first_id=9)
    export[-1]["data"]["question"] = open_round(run_dir).items[3]["question"]
    with pytest.raises(DataError) as info:
        import_labelstudio(run_dir, write_export(tmp_path / "e.json", export))
    message = info.value.message
    assert "3 problems" in message and snapshot(run_dir) == before
    assert f"task #3 (Label Studio id 3, star id '{ids[2]}')" in message and "not a valid arithmetic answer" in message
    assert f"task #4 (Label Studio id 4, star id '{ids[0]}'): star id '{ids[0]}' is annotated in task #1 too" in message
    assert f"star id '{ids[3]}' already has the label '5' (by human), the annotation says '6'" in message
    assert f"star label {run_dir} FILE --correct" in message


@pytest.mark.parametrize("content, expected", [
    (b"", "is not valid JSON at line 1 column 1"),
    (b'[{"id": 1,', "is not valid JSON at line 1"),
    (b'{"id": 1}', "holds a JSON dict, not a list of tasks"),
    (b"[]", "holds no tasks"),
    (b'["\xe9"]', "is not valid UTF-8"),
    (b'[{"id": 3, "question": "q", "answer": "A", "annotation_id": 4}]', ("task #1 (Label Studio id 3): is not a Label "
     "Studio task with 'data' and an 'annotations' list; export the project from Label Studio in its 'JSON' format")),
    (b"[7]", "task #1: is not a Label Studio task"),
])
def test_a_file_that_is_not_a_json_export_is_refused(run, tmp_path: Path, content: bytes, expected: str) -> None:
    run_dir, _ = run
    file = tmp_path / "export.json"
    file.write_bytes(content)
    with pytest.raises(DataError) as info:
        import_labelstudio(run_dir, file)
    assert expected in info.value.message and str(file) in info.value.message
    assert snapshot(run_dir) == []


def test_cli_import_error_is_one_message_and_exit_2(run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir, _ = run
    assert main(["labelstudio", "import", str(run_dir), str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "error: Label Studio export" in err and "does not exist" in err and "Traceback" not in err


# --- push and pull through the SDK (a fake client here; the real server in tests/integration) --------


def test_push_creates_a_project_once_and_adds_only_missing_tasks(run, tmp_path: Path) -> None:
    run_dir, ids = run
    client = FakeLabelStudio()
    first = push_round(client, run_dir, "http://ls.test")
    assert (first.project, first.created, first.pushed, first.present) == (1, True, 4, 0)
    project = client.projects_made[1]
    assert project.label_config == labeling_config(open_round(run_dir).task)
    assert project.settings == {"show_collab_predictions": True, "show_skip_button": True}
    assert [t["data"]["star_id"] for t in client.tasks_of[1]] == ids and client.tasks_of[1][0]["predictions"]
    assert resolve(open_round(run_dir), None, None) == ("http://ls.test", 1)  # recorded for later calls
    again = push_round(client, run_dir, "http://ls.test", project=1)
    assert (again.created, again.pushed, again.present) == (False, 0, 4) and len(client.tasks_of[1]) == 4


def test_pull_keeps_the_export_then_imports_it_all_or_nothing(run, tmp_path: Path) -> None:
    run_dir, ids = run
    client = FakeLabelStudio()
    push_round(client, run_dir, "http://ls.test")
    client.given = {ids[0]: ["1"], ids[1]: ["banana"]}
    with pytest.raises(DataError, match="not a valid arithmetic answer"):
        pull_round(client, run_dir, "http://ls.test", 1)
    kept = sorted((run_dir / "round-0" / "labelstudio").glob("export-*.json"))
    assert len(kept) == 1 and snapshot(run_dir) == []  # nothing committed, the export kept
    client.given[ids[1]] = ["2"]
    path, report = pull_round(client, run_dir, "http://ls.test", 1, annotator="ls")
    assert report.committed == 2 and path.parent == kept[0].parent and path != kept[0]
    assert snapshot(run_dir) == [(ids[0], "1", "ls", 0), (ids[1], "2", "ls", 0)]


def test_a_project_without_an_answer_control_is_refused(run) -> None:
    run_dir, _ = run
    client = FakeLabelStudio()
    client.projects.create(title="mine", label_config='<View><Text name="t" value="$t"/></View>')
    with pytest.raises(ConfigError, match="no control named 'answer'"):
        push_round(client, run_dir, "http://ls.test", project=1)


def test_sdk_errors_become_one_clear_error(run) -> None:
    run_dir, _ = run

    class Refused(Exception):
        status_code = 401

    def refuse(**kwargs):
        raise Refused()

    def unreachable(**kwargs):
        raise OSError("Connection refused")

    client = FakeLabelStudio()
    client.projects.create = refuse
    with pytest.raises(ConfigError, match="refused the API key while trying to create a project"):
        push_round(client, run_dir, "http://ls.test")
    client.projects.create = unreachable
    with pytest.raises(ConfigError, match="could not reach Label Studio at http://ls.test") as info:
        push_round(client, run_dir, "http://ls.test")
    assert "label-studio start" in info.value.hint


def test_missing_key_or_sdk_says_exactly_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_LS_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_LS_KEY is unset") as info:
        connect("http://ls.test", "MY_LS_KEY")
    assert "export MY_LS_KEY=" in info.value.hint
    monkeypatch.setenv("MY_LS_KEY", "abc")
    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)  # as if not installed
    with pytest.raises(ConfigError, match="needs the label-studio-sdk package") as info:
        connect("http://ls.test", "MY_LS_KEY")
    assert 'pip install "star-al[labelstudio]"' in info.value.hint


def test_pull_without_a_project_says_how_to_get_one(run, capsys: pytest.CaptureFixture) -> None:
    run_dir, _ = run
    assert main(["labelstudio", "pull", str(run_dir)]) == 2
    assert "no Label Studio URL given and none recorded" in capsys.readouterr().err
    assert main(["labelstudio", "pull", str(run_dir), "--url", "http://ls.test"]) == 2
    assert f"star labelstudio push {run_dir} --url http://ls.test" in capsys.readouterr().err
