"""Importing human answers: all or nothing, every bad file named by file and line, never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from star.annotation.commit import import_labels
from star.annotation.queries import open_round
from star.cli import main
from star.config import build_config
from star.errors import ConfigError, DataError, RunStateError
from star.store.io import MAX_LINE_BYTES, read_jsonl, write_json
from star.store.labels import LabelStore
from star.tasks import build_task
from star.tasks.files import read_records

ROUNDS = 3


@pytest.fixture
def make_run(make_waiting_run):
    return lambda folder, task=None, n=4: make_waiting_run(folder, task, n, ROUNDS)


@pytest.fixture
def run(tmp_path: Path, make_run) -> tuple[Path, list[str]]:
    return make_run(tmp_path)


def snapshot(run_dir: Path) -> list[tuple]:
    store = LabelStore(run_dir / "labels.sqlite")
    try:
        return [(x.example_id, x.answer, x.annotator, x.round) for x in store.all()]
    finally:
        store.close()


def write(path: Path, lines: list[str | bytes | dict]) -> Path:
    """Lines (dicts as JSON, str as UTF-8, bytes verbatim), one a line."""
    out = b""
    for x in lines:
        out += (json.dumps(x).encode() if isinstance(x, dict) else x.encode() if isinstance(x, str) else x) + b"\n"
    path.write_bytes(out)
    return path


def import_error(run_dir: Path, file: Path) -> str:
    """The message of the DataError an import raises; the store must be unchanged by it."""
    before = snapshot(run_dir)
    with pytest.raises(DataError) as info:
        import_labels(run_dir, file)
    assert snapshot(run_dir) == before
    return str(info.value)


# --- good files ------------------------------------------------------------------------------


def test_jsonl_import_commits_every_row_in_the_open_round(run, tmp_path: Path) -> None:
    run_dir, ids = run
    file = write(tmp_path / "a.jsonl", [{"id": i, "answer": str(n)} for n, i in enumerate(ids)])
    assert import_labels(run_dir, file) == 4
    assert snapshot(run_dir) == [(i, str(n), "human", 0) for n, i in enumerate(ids)]
    assert open_round(run_dir).remaining() == []


def test_csv_import_reads_the_filled_todo_file(run, tmp_path: Path) -> None:
    run_dir, ids = run
    assert main(["query", str(run_dir)]) == 0
    todo = run_dir / "round-0" / "todo.csv"
    rows = todo.read_text(encoding="utf-8").splitlines()
    assert rows[0].split(",")[:4] == ["id", "question", "suggestion", "answer"]
    filled = tmp_path / "filled.csv"
    rows = "".join(f'{i},"#### {n}",ann\n' for n, i in enumerate(ids[:2]))
    filled.write_text("Id, Answer ,annotator\n" + rows, encoding="utf-8")
    assert import_labels(run_dir, filled) == 2
    assert snapshot(run_dir) == [(ids[0], "#### 0", "ann", 0), (ids[1], "#### 1", "ann", 0)]


def test_answers_are_stored_verbatim(run, tmp_path: Path) -> None:
    run_dir, ids = run
    answer = '<script>alert("x")</script> 7'
    import_labels(run_dir, write(tmp_path / "a.jsonl", [{"id": ids[0], "answer": answer, "annotator": "ann"}]))
    assert snapshot(run_dir) == [(ids[0], answer, "ann", 0)]


def test_one_bad_line_imports_nothing(run, tmp_path: Path) -> None:
    run_dir, ids = run
    file = write(tmp_path / "a.jsonl", [{"id": ids[0], "answer": "1"}, {"id": ids[1], "answer": "2"},
                                        {"id": ids[2], "answer": "no number here"}])
    message = import_error(run_dir, file)
    assert f"{file}:3:" in message and "nothing was imported" in message
    assert snapshot(run_dir) == []


def test_every_problem_is_listed_in_line_order(run, tmp_path: Path) -> None:
    run_dir, ids = run
    file = write(tmp_path / "a.jsonl", ["{broken", {"id": "nope", "answer": "1"}, {"id": ids[0], "answer": ""}])
    message = import_error(run_dir, file)
    assert "3 problems" in message
    assert message.index(f"{file}:1:") < message.index(f"{file}:2:") < message.index(f"{file}:3:")


# --- bad files: one clear error naming file and line ---------------------------------------------

JSONL_CASES = {
    "malformed JSON": ([{"id": "@0", "answer": "1"}, '{"id": "@1", "answer": 2'], 2, "malformed JSON"),
    "missing id": ([{"answer": "1"}], 1, "missing field 'id'"),
    "missing answer": ([{"id": "@0"}], 1, "missing field 'answer'"),
    "non-UTF-8": ([{"id": "@0", "answer": "1"}, b'{"id": "@1", "answer": "caf\xe9 1"}'], 2, "not valid UTF-8"),
    "duplicate id": ([{"id": "@0", "answer": "1"}, {"id": "@1", "answer": "1"}, {"id": "@0", "answer": "2"}], 3,
                     "appears again (first on line 1)"),
    "huge line": ([{"id": "@0", "answer": "1"}, {"id": "@1", "answer": "9" * (MAX_LINE_BYTES + 10)}], 2,
                  f"longer than {MAX_LINE_BYTES} bytes"),
    "unknown id": ([{"id": "pool-999999", "answer": "1"}], 1, "unknown id 'pool-999999'"),
    "path-like id": ([{"id": "../../etc/passwd", "answer": "1"}], 1, "unknown id"),
    "empty answer": ([{"id": "@0", "answer": "   "}], 1, "answer is empty"),
    "wrong type (no number)": ([{"id": "@0", "answer": "banana"}], 1, "not a valid arithmetic answer"),
    "answer not text": ([{"id": "@0", "answer": 42}], 1, "answer must be text, got int"),
    "id not text": ([{"id": 7, "answer": "1"}], 1, "field 'id' must be non-empty text"),
    "not an object": (['["@0", "1"]'], 1, "expected a JSON object, got list"),
    "lone surrogate": (['{"id": "@0", "answer": "\\ud800 5"}'], 1, "not valid Unicode"),
    "deep nesting": (["[" * 100_000], 1, "malformed JSON"),
    "mixed annotators": ([{"id": "@0", "answer": "1", "annotator": "a"}, {"id": "@1", "answer": "1", "annotator": "b"}],
                         2, "differs from 'a' on line 1"),
    "bad annotator": ([{"id": "@0", "answer": "1", "annotator": ""}], 1, "annotator"),
}


def _resolve(lines: list, ids: list[str]) -> list:
    """Replace '@k' placeholders with the k-th query id."""
    out = []
    for x in lines:
        if isinstance(x, dict):
            x = {k: (ids[int(v[1:])] if isinstance(v, str) and v.startswith("@") else v) for k, v in x.items()}
        elif isinstance(x, (str, bytes)):
            for k, i in enumerate(ids):
                x = x.replace(f'"@{k}"', f'"{i}"') if isinstance(x, str) else x.replace(f'"@{k}"'.encode(), f'"{i}"'.encode())
        out.append(x)
    return out


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_bad_jsonl_file_names_file_and_line(run, tmp_path: Path, case: str) -> None:
    run_dir, ids = run
    lines, line, expected = JSONL_CASES[case]
    file = write(tmp_path / "answers.jsonl", _resolve(lines, ids))
    message = import_error(run_dir, file)
    assert f"{file}:{line}:" in message, message
    assert expected in message, message


CSV_CASES = {
    "no answer column": ("id,label\n@0,1\n", 1, "no 'answer' column"),
    "non-UTF-8": ("id,answer\n@0,1\n@1,", 3, "byte 0xe9 at column 16 is not valid UTF-8"),
    "bad quoting": ('id,answer\n@0,"1"x\n', 2, "malformed CSV"),
    "too many values": ("id,answer\n@0,1,2\n", 2, "3 values but the header names 2 columns"),
    "missing value": ("id,answer\n@0\n", 2, "missing field 'answer'"),
    "duplicate id": ("id,answer\n@0,1\n\n@0,2\n", 4, "appears again"),
    "multi-line value keeps its start line": ('id,answer\n@0,"1\nmore"\n@1,\n', 4, "answer is empty"),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_csv_file_names_file_and_line(run, tmp_path: Path, case: str) -> None:
    run_dir, ids = run
    text, line, expected = CSV_CASES[case]
    for k, i in enumerate(ids):
        text = text.replace(f"@{k}", i)
    data = text.encode() + (b"caf\xe9 1\n" if case == "non-UTF-8" else b"")
    file = tmp_path / "answers.csv"
    file.write_bytes(data)
    message = import_error(run_dir, file)
    assert f"{file}:{line}:" in message, message
    assert expected in message, message


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"id,answer\n"])
def test_empty_file_is_refused(run, tmp_path: Path, content: bytes) -> None:
    run_dir, _ = run
    for suffix in (".jsonl", ".csv"):
        file = tmp_path / f"empty{suffix}"
        file.write_bytes(content)
        message = import_error(run_dir, file)
        assert str(file) in message and ("empty" in message or "no 'id' column" in message), message


def test_missing_file_and_folder(run, tmp_path: Path) -> None:
    run_dir, _ = run
    assert "does not exist" in import_error(run_dir, tmp_path / "nope.jsonl")
    assert "is not a file" in import_error(run_dir, tmp_path)


def test_label_already_committed_is_never_overwritten(run, tmp_path: Path) -> None:
    run_dir, ids = run
    import_labels(run_dir, write(tmp_path / "a.jsonl", [{"id": ids[0], "answer": "1"}]))
    message = import_error(run_dir, write(tmp_path / "b.jsonl", [{"id": ids[1], "answer": "2"}, {"id": ids[0], "answer": "5"}]))
    assert f"{tmp_path / 'b.jsonl'}:2:" in message and "already has a committed label ('1' by human)" in message
    assert snapshot(run_dir) == [(ids[0], "1", "human", 0)]


def test_choice_task_checks_the_choices(tmp_path: Path, make_run) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        write(data / name, [{"question": f"q{i}", "answer": "yes" if i % 2 else "no"} for i in range(6)])
    run_dir, ids = make_run(tmp_path, {"name": "jsonl", "path": str(data), "answer_type": "choice",
                                       "choices": ["yes", "no"]}, n=2)
    message = import_error(run_dir, write(tmp_path / "a.jsonl", [{"id": ids[0], "answer": "maybe"}]))
    assert f"{tmp_path / 'a.jsonl'}:1:" in message and "write one of yes, no" in message
    assert import_labels(run_dir, write(tmp_path / "b.jsonl", [{"id": ids[0], "answer": "Yes"}])) == 1


# --- the run's state -------------------------------------------------------------------------


def test_no_query_yet_says_how_to_get_one(tmp_path: Path, make_run) -> None:
    run_dir, _ = make_run(tmp_path)
    (run_dir / "round-0" / "query.jsonl").unlink()
    with pytest.raises(RunStateError) as info:
        import_labels(run_dir, tmp_path / "x.jsonl")
    assert "no query" in info.value.message and f"star run --resume {run_dir}" in info.value.hint


def test_finished_run_and_non_run(tmp_path: Path, make_run) -> None:
    run_dir, _ = make_run(tmp_path)
    for t in range(ROUNDS):
        write_json(run_dir / f"round-{t}" / "metrics.json", {"round": t})
    with pytest.raises(RunStateError, match="finished"):
        open_round(run_dir)
    with pytest.raises(RunStateError, match="not a star run directory"):
        open_round(tmp_path)


def test_cli_prints_one_error_without_traceback(run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, ids = run
    bad = write(tmp_path / "a.jsonl", [{"id": ids[0], "answer": "1"}, "{oops"])
    assert main(["label", str(run_dir), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: malformed JSON" in err and "Traceback" not in err
    good = write(tmp_path / "b.jsonl", [{"id": i, "answer": "1"} for i in ids[:3]])
    assert main(["label", str(run_dir), str(good), "--annotator", "alice"]) == 0
    out = capsys.readouterr().out
    assert "imported 3 label(s) into round 0" in out and "1 still to answer" in out
    assert main(["query", str(run_dir)]) == 0
    assert "1 of 4 item(s) still need an answer" in capsys.readouterr().out
    assert [r["id"] for r in read_jsonl(run_dir / "round-0" / "todo.jsonl")] == [ids[3]]
    assert main(["query", str(tmp_path / "nothing")]) == 2


# --- property: random malformed input never raises anything else, never loses a label ------------

_IDS = [f"pool-{i:06d}" for i in range(12)]
_ANSWERS = st.one_of(st.sampled_from(["42", "#### 7", "", " ", "banana", "<b>1</b>", "\\ud800 3"]), st.text(max_size=20))
_ROW = st.builds(lambda i, a, extra: json.dumps({"id": i, "answer": a, **extra}),
                 st.sampled_from(_IDS + ["", "../x", "nope"]), _ANSWERS,
                 st.dictionaries(st.sampled_from(["annotator", "x"]), st.one_of(st.text(max_size=5), st.integers())))
_JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                        lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.sampled_from(["id", "answer", "q"]), inner, max_size=3),
                        max_leaves=6).map(json.dumps)
_LINE = st.one_of(_ROW.map(str.encode), _JSONISH.map(str.encode), st.text(max_size=40).map(str.encode),
                  st.binary(max_size=40), st.sampled_from([b"id,answer", b'"', b"\xef\xbb\xbf", b",,,"]))
_FILE = st.tuples(st.lists(_LINE, max_size=8), st.sampled_from([b"\n", b"\r\n"]), st.sampled_from([".jsonl", ".csv", ""]))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # a stateless factory
@given(_FILE)
def test_property_import_is_all_or_nothing_and_never_crashes(make_run, file_spec) -> None:
    lines, sep, suffix = file_spec
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, ids = make_run(Path(tmp))
        import_labels(run_dir, write(Path(tmp) / "first.jsonl", [{"id": ids[0], "answer": "5"}]))
        before = snapshot(run_dir)
        file = Path(tmp) / f"answers{suffix}"
        file.write_bytes(sep.join(lines))
        try:
            count = import_labels(run_dir, file)
        except DataError as e:
            assert str(file) in e.message
            assert snapshot(run_dir) == before
        else:
            after = snapshot(run_dir)
            assert after[: len(before)] == before and len(after) == len(before) + count and count > 0


@settings(max_examples=60, deadline=None)
@given(st.lists(_LINE, max_size=8), st.sampled_from([b"\n", b"\r\n"]))
def test_property_task_loaders_raise_only_star_errors(lines, sep) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "train.jsonl").write_bytes(sep.join(lines))
        (folder / "test.jsonl").write_bytes(sep.join(lines))
        try:
            read_records(folder / "train.jsonl", ["question", "answer"])
        except DataError as e:
            assert str(folder / "train.jsonl") in e.message
        for kind in ({"answer_type": "number"}, {"answer_type": "choice", "choices": ["yes", "no"]}, {"answer_type": "text"}):
            try:
                build_task(build_config({"task": {"name": "jsonl", "path": tmp, **kind}}).task).load("pool")
            except (DataError, ConfigError):
                pass


def test_csv_cells_that_look_like_formulas_are_quoted():
    """A question starting with '=' cannot run as a spreadsheet formula; numbers stay numbers."""
    from star.annotation.queries import _spreadsheet_safe

    assert _spreadsheet_safe("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert _spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)"
    assert _spreadsheet_safe("-cmd|' /C calc'!A0") == "'-cmd|' /C calc'!A0"
    assert _spreadsheet_safe("-3") == "-3" and _spreadsheet_safe("Ava has 3") == "Ava has 3"


# --- corrections -------------------------------------------------------------------------------

def test_correction_replaces_answers_keeps_the_round_and_the_old_answer(run: tuple[Path, list[str]], tmp_path: Path) -> None:
    from star.annotation.commit import correct_labels

    run_dir, ids = run
    import_labels(run_dir, write(tmp_path / "a.jsonl", [{"id": i, "answer": "5"} for i in ids[:3]]))
    pairs = correct_labels(run_dir, write(tmp_path / "fix.csv", ["id,answer", f"{ids[1]},7"]), annotator="reviewer")
    assert [(old.answer, new.answer, new.round, new.annotator) for old, new in pairs] == [("5", "7", 0, "reviewer")]
    assert snapshot(run_dir) == [(ids[0], "5", "human", 0), (ids[1], "7", "reviewer", 0), (ids[2], "5", "human", 0)]
    store = LabelStore(run_dir / "labels.sqlite")
    try:
        (old, replaced), = store.history(ids[1])
        assert (old.answer, old.annotator, old.round) == ("5", "human", 0) and replaced >= old.created
    finally:
        store.close()


def test_correction_is_all_or_nothing_and_names_every_bad_line(run: tuple[Path, list[str]], tmp_path: Path) -> None:
    from star.annotation.commit import correct_labels

    run_dir, ids = run
    import_labels(run_dir, write(tmp_path / "a.jsonl", [{"id": ids[0], "answer": "5"}, {"id": ids[1], "answer": "6"}]))
    before = snapshot(run_dir)
    bad = write(tmp_path / "fix.jsonl", [{"id": ids[0], "answer": "9"},   # fine on its own
                                         {"id": ids[2], "answer": "1"},   # never labelled
                                         {"id": ids[0], "answer": "8"},   # given twice
                                         {"id": ids[1], "answer": "six"},  # not a number
                                         {"id": ids[1], "answer": "6"}])  # (duplicate of line 4)
    with pytest.raises(DataError) as e:
        correct_labels(run_dir, bad)
    msg = e.value.message
    assert "fix.jsonl:2:" in msg and "no committed label" in msg
    assert "fix.jsonl:3:" in msg and "appears again" in msg
    assert "fix.jsonl:4:" in msg and "fix.jsonl:1:" not in msg and "nothing was imported" in msg
    assert snapshot(run_dir) == before
    with pytest.raises(DataError, match="already has the answer"):
        correct_labels(run_dir, write(tmp_path / "same.jsonl", [{"id": ids[0], "answer": "5"}]))


def test_cli_correct_on_a_labelled_run(run: tuple[Path, list[str]], tmp_path: Path, capsys) -> None:
    run_dir, ids = run
    import_labels(run_dir, write(tmp_path / "a.jsonl", [{"id": ids[0], "answer": "5"}]))
    assert main(["label", str(run_dir), str(write(tmp_path / "fix.jsonl", [{"id": ids[0], "answer": "4"}])), "--correct"]) == 0
    assert "corrected 1 label(s)" in capsys.readouterr().out and snapshot(run_dir)[0][1] == "4"
    assert main(["label", str(run_dir), str(write(tmp_path / "f2.jsonl", [{"id": ids[3], "answer": "4"}])), "--correct"]) == 2
    assert "no committed label to correct" in capsys.readouterr().err


# --- the human annotator, given only a round's context (no model) --------------------------------


def test_human_annotator_needs_only_the_round_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """acquire(ctx, ids) writes the query from `suggest`, reuses it once written, and is done when all are labelled."""
    from star.annotation.context import RoundContext
    from star.annotation.human import HumanAnnotator
    from star.config import TaskConfig
    from star.store.io import write_jsonl
    from star.store.runs import RunDir

    task = build_task(TaskConfig(name="arithmetic", pool_size=8, test_size=4))
    pool = task.load("pool")
    run_dir, asked = RunDir.create(tmp_path / "run"), []
    write_jsonl(run_dir.scores_path(1), [{"id": e.id, "score": 0.25} for e in pool])  # as select_round writes it

    def suggest(ids):
        asked.append(list(ids))
        return [f"so the answer is {n}" for n, _ in enumerate(ids)]

    store = LabelStore(run_dir.labels_path)
    try:
        ctx = RoundContext(store, run_dir, task, 1, {e.id: e.question for e in pool}, suggest)
        ids = [pool[3].id, pool[1].id]
        store.add(ids[1], "7", "human", 1)
        assert HumanAnnotator().acquire(ctx, ids) == [ids[0]]
        query = read_jsonl(run_dir.round_dir(1) / "query.jsonl")
        assert asked == [ids] and [r["id"] for r in query] == ids
        assert [(r["question"], r["raw_output"], r["score"], r["round"]) for r in query] == [
            (pool[3].question, "so the answer is 0", 0.25, 1), (pool[1].question, "so the answer is 1", 0.25, 1)]
        assert [r["id"] for r in read_jsonl(run_dir.round_dir(1) / "todo.jsonl")] == [ids[0]]
        assert "round 1 waits for 1 of 2 label(s)" in capsys.readouterr().err
        assert HumanAnnotator().acquire(ctx, ids) == [ids[0]] and asked == [ids]  # the written query is reused
        store.add(ids[0], "3", "human", 1)
        assert HumanAnnotator().acquire(ctx, ids) == []
    finally:
        store.close()
