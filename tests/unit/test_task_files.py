"""Reading task data: JSON-lines errors name file and line, caps are seeded, paths are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from star.config import TaskConfig
from star.errors import ConfigError, DataError
from star.store.io import MAX_LINE_BYTES, LineTooLong, capped_lines
from star.tasks import TASKS, build_task
from star.tasks.files import read_records, sample_split


def write_lines(path: Path, lines: list[str | dict]) -> Path:
    """Write records (dicts as JSON, strings verbatim) one a line."""
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines), encoding="utf-8")
    return path


def make_folder(tmp_path: Path, train: list[str | dict], test: list[str | dict] | None = None) -> Path:
    """A task folder with train.jsonl and test.jsonl."""
    write_lines(tmp_path / "train.jsonl", train)
    write_lines(tmp_path / "test.jsonl", test if test is not None else train)
    return tmp_path


def error_of(fn, *args) -> str:
    """The text of the DataError `fn(*args)` raises."""
    with pytest.raises(DataError) as info:
        fn(*args)
    return str(info.value)


# --- read_records -------------------------------------------------------------------------


def test_reads_records_with_line_numbers_and_skips_blank_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q1", "answer": "a1"}, "", "   ", {"question": "q2", "answer": "a2"}])
    assert read_records(path, ["question", "answer"]) == [
        (1, {"question": "q1", "answer": "a1"}),
        (4, {"question": "q2", "answer": "a2"}),
    ]


def test_crlf_and_bom_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": "a"}\r\n{"question": "r", "answer": "b"}\r\n')
    assert [n for n, _ in read_records(path, ["question"])] == [1, 2]


def test_missing_file(tmp_path: Path) -> None:
    msg = error_of(read_records, tmp_path / "nope.jsonl", ["question"])
    assert "nope.jsonl" in msg and "does not exist" in msg


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert "is not a file" in error_of(read_records, tmp_path, ["question"])


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    msg = error_of(read_records, path, ["question"])
    assert "d.jsonl" in msg and "empty" in msg


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}, '{"question": "q", "answer": '])
    msg = error_of(read_records, path, ["question"])
    assert f"{path}:2:" in msg and "malformed JSON" in msg and "hint" in msg


def test_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ['["q", "a"]'])
    msg = error_of(read_records, path, ["question"])
    assert f"{path}:1:" in msg and "expected a JSON object" in msg and "list" in msg


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "caf\xe9", "answer": "a"}\n')
    msg = error_of(read_records, path, ["question"])
    assert f"{path}:2:" in msg and "UTF-8" in msg and "0xe9" in msg


def test_missing_field_names_file_line_and_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}, {"question": "q", "label": "a"}])
    msg = error_of(read_records, path, ["question", "answer"])
    assert f"{path}:2:" in msg and "'answer'" in msg and "label" in msg


def test_non_string_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q", "answer": 42}])
    msg = error_of(read_records, path, ["question", "answer"])
    assert f"{path}:1:" in msg and "must be a string" in msg and "int" in msg


def test_empty_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "  ", "answer": "a"}])
    msg = error_of(read_records, path, ["question", "answer"])
    assert f"{path}:1:" in msg and "'question' is empty" in msg


def test_huge_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}, {"question": "x" * (MAX_LINE_BYTES + 10), "answer": "a"}])
    msg = error_of(read_records, path, ["question"])
    assert f"{path}:2:" in msg and "longer than" in msg


def test_line_just_under_the_limit_is_fine(tmp_path: Path) -> None:
    record = {"question": "x" * (MAX_LINE_BYTES - 100), "answer": "a"}
    path = write_lines(tmp_path / "d.jsonl", [record, {"question": "q", "answer": "b"}])
    assert [n for n, _ in read_records(path, ["question"])] == [1, 2]


def test_capped_lines_drops_the_bom_of_line_one_only_and_names_a_long_line(tmp_path: Path) -> None:
    """The one line reader of task data and answers files (star.store.io.capped_lines)."""
    path = tmp_path / "lines"
    path.write_bytes(b"\xef\xbb\xbfab\r\n\xef\xbb\xbfcd\n\nefgh\n")
    assert list(capped_lines(path, 5)) == [(1, b"ab"), (2, b"\xef\xbb\xbfcd"), (3, b""), (4, b"efgh")]
    path.write_bytes(b"ab\nabcde\n")
    with pytest.raises(LineTooLong) as info:
        list(capped_lines(path, 4))
    assert info.value.number == 2
    path.write_bytes(b"\xef\xbb\xbfab\n")  # the cap counts the BOM: the bytes read, not the text kept
    with pytest.raises(LineTooLong):
        list(capped_lines(path, 4))


# --- sample_split -------------------------------------------------------------------------


def test_sample_split_is_seeded_ordered_and_capped() -> None:
    records = list(range(100))
    a, b = sample_split(records, 10, seed=3), sample_split(records, 10, seed=3)
    assert a == b and len(a) == 10 and a == sorted(a)
    assert sample_split(records, 10, seed=4) != a
    assert sample_split(records, 500, seed=3) == records
    assert sample_split(records, 100, seed=3) == records


# --- task folders and loading -------------------------------------------------------------


def test_all_file_tasks_are_registered() -> None:
    assert {"gsm8k", "boolq", "obqa", "jsonl"} <= set(TASKS)


@pytest.mark.parametrize("name", ["gsm8k", "boolq", "obqa", "jsonl"])
def test_missing_path_is_a_config_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="task.path"):
        build_task(TaskConfig(name=name))
    with pytest.raises(ConfigError, match="does not exist"):
        build_task(TaskConfig(name=name, path=str(tmp_path / "absent")))
    (tmp_path / "file.txt").write_text("{}\n")  # a .jsonl file is data now (tests/unit/test_task_sources.py)
    with pytest.raises(ConfigError, match="not a folder, nor a .jsonl, .json, .csv or .parquet file"):
        build_task(TaskConfig(name=name, path=str(tmp_path / "file.txt")))


def test_missing_split_file_is_a_data_error(tmp_path: Path) -> None:
    write_lines(tmp_path / "train.jsonl", [{"question": "q", "answer": "#### 1"}])
    task = build_task(TaskConfig(name="gsm8k", path=str(tmp_path)))
    assert len(task.load("pool")) == 1
    assert "test.jsonl" in error_of(task.load, "test")


def test_gsm8k_load_ids_caps_and_meta(tmp_path: Path) -> None:
    train = [{"question": f"q{i}", "answer": f"work\n#### {i}"} for i in range(20)]
    folder = make_folder(tmp_path, train, train[:3])
    task = build_task(TaskConfig(name="gsm8k", path=str(folder), pool_size=5, test_size=64, seed=1))
    pool, test = task.load("pool"), task.load("test")
    assert len(pool) == 5 and [e.id for e in test] == ["gsm8k-test-1", "gsm8k-test-2", "gsm8k-test-3"]
    lines = [e.meta["line"] for e in pool]
    assert lines == sorted(lines) and all(e.id == f"gsm8k-train-{e.meta['line']}" for e in pool)
    again = build_task(TaskConfig(name="gsm8k", path=str(folder), pool_size=5, test_size=64, seed=1)).load("pool")
    assert [e.id for e in again] == [e.id for e in pool]
    assert pool[0].answer == train[lines[0] - 1]["answer"]


@pytest.mark.parametrize(
    ("name", "bad", "extra"),
    [
        ("gsm8k", "work\n#### many", {}),
        ("boolq", "the correct answer is maybe", {}),
        ("obqa", "E", {}),
        ("jsonl", "twelve", {"answer_type": "number"}),
        ("jsonl", "maybe", {"answer_type": "choice", "choices": ["yes", "no"]}),
    ],
)
def test_wrong_answer_type_names_file_and_line(tmp_path: Path, name: str, bad: str, extra: dict) -> None:
    good = {"gsm8k": "#### 3", "boolq": "the correct answer is true", "obqa": "B"}.get(name, "yes" if extra.get("choices") else "3")
    folder = make_folder(tmp_path, [{"question": "q", "answer": good}, {"question": "q", "answer": bad}])
    task = build_task(TaskConfig(name=name, path=str(folder), **extra))
    msg = error_of(task.load, "pool")
    assert f"{folder / 'train.jsonl'}:2:" in msg and repr(bad)[:20] in msg and "hint" in msg


def test_malformed_line_surfaces_through_load(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, [{"question": "q", "answer": "A"}, "{oops"])
    msg = error_of(build_task(TaskConfig(name="obqa", path=str(folder))).load, "pool")
    assert "train.jsonl:2:" in msg


def test_jsonl_custom_fields(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, [{"text": "2+2?", "label": "4"}, {"text": "3+3?", "label": "six"}])
    task = build_task(TaskConfig(name="jsonl", path=str(folder), question_field="text", answer_field="label"))
    examples = task.load("pool")
    assert [(e.id, e.question, e.answer) for e in examples] == [("jsonl-train-1", "2+2?", "4"), ("jsonl-train-2", "3+3?", "six")]
    msg = error_of(build_task(TaskConfig(name="jsonl", path=str(folder))).load, "pool")
    assert "train.jsonl:1:" in msg and "missing field 'question'" in msg


def test_jsonl_choice_needs_choices(tmp_path: Path) -> None:
    folder = make_folder(tmp_path, [{"question": "q", "answer": "yes"}])
    with pytest.raises(ConfigError, match="task.choices"):
        build_task(TaskConfig(name="jsonl", path=str(folder), answer_type="choice"))
    with pytest.raises(ConfigError, match="repeats"):
        build_task(TaskConfig(name="jsonl", path=str(folder), answer_type="choice", choices=["Yes", "yes"]))


def test_deeply_nested_json_line_is_a_data_error(tmp_path):
    """A pathological line (100k nested brackets) is a clear DataError, not a RecursionError traceback."""
    from star.errors import DataError
    from star.tasks.files import read_records

    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"deep.jsonl:1"):
        read_records(path, ["question", "answer"])
