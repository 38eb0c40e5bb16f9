"""Task data from any source: .jsonl/.json/.csv/.parquet files, folders of them, save_to_disk folders, the Hub.

Each source gives the same examples, a held-out test set never overlaps the pool, column mapping and
`task.prompt_template` build the question, `task.system_prompt` reaches the chat messages, and every bad
row, column, extension or unreachable Hub dataset is one error naming where it is and the fix.
The Hub is never contacted: HF_HUB_OFFLINE=1 and name lookups are refused (the `offline` fixture).
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from star.config import TaskConfig
from star.errors import ConfigError, DataError
from star.tasks import build_task
from star.tasks.template import PromptTemplate

ROWS = [{"question": f"is {i} odd", "answer": "yes" if i % 2 else "no", "passage": f"{i} is a number."} for i in range(12)]
CHOICE = {"name": "jsonl", "answer_type": "choice", "choices": ["yes", "no"]}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list:
    """No network: HF_HUB_OFFLINE=1 (env and the libraries' flags), a private datasets cache, DNS refused."""
    import huggingface_hub.constants  # read HF_HUB_OFFLINE when first imported (maybe earlier): set the flags too

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    try:
        import datasets
    except ImportError:
        datasets = None
    if datasets is not None:
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    lookups: list = []

    def refuse(*args, **kwargs):  # any attempt to reach a host is recorded and fails
        lookups.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return lookups


def write(path: Path, rows: list[dict]) -> Path:
    """`rows` in the format the extension names (.jsonl, .json array, .csv, .parquet)."""
    ext = path.suffix
    if ext == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif ext == ".json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif ext == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif ext == ".parquet":
        datasets = pytest.importorskip("datasets")
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def task_of(path: Path | str, **options):
    return build_task(TaskConfig(**{**CHOICE, "path": str(path), **options}))


def error_of(fn, *args, kind: type[Exception] = DataError) -> str:
    with pytest.raises(kind) as info:
        fn(*args)
    return str(info.value)


# --- one file: the pool, and a held-out test set -----------------------------------------------

FIRST_ROW = {".jsonl": 1, ".json": 1, ".csv": 2, ".parquet": 1}  # JSON lines and CSV count lines (header = 1)


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".parquet"])
def test_one_file_of_each_type_gives_the_same_examples_and_a_disjoint_held_out_test_set(tmp_path: Path, ext: str) -> None:
    task = task_of(write(tmp_path / f"data{ext}", ROWS), test_size=3, pool_size=100, seed=0)
    pool, test = task.load("pool"), task.load("test")
    assert len(test) == 3 and len(pool) == 9 and not {e.id for e in pool} & {e.id for e in test}
    first = FIRST_ROW[ext]
    by_id = {f"jsonl-data-{first + i}": (r["question"], r["answer"]) for i, r in enumerate(ROWS)}
    assert {e.id: (e.question, e.answer) for e in pool + test} == by_id  # every row once, ids name the line/row
    assert [e.id for e in test] == sorted((e.id for e in test), key=lambda i: int(i.rsplit("-", 1)[1]))
    again = task_of(tmp_path / f"data{ext}", test_size=3, pool_size=100, seed=0)
    assert [e.id for e in again.load("test")] == [e.id for e in test]  # seeded
    other = task_of(tmp_path / f"data{ext}", test_size=3, pool_size=100, seed=1).load("test")
    assert [e.id for e in other] != [e.id for e in test]
    # the held-out rows are the same rows whatever the file type
    assert [e.question for e in test] == [e.question for e in task_of(write(tmp_path / "ref.jsonl", ROWS), test_size=3).load("test")]


def test_the_pool_cap_applies_to_what_the_held_out_test_set_leaves(tmp_path: Path) -> None:
    task = task_of(write(tmp_path / "d.csv", ROWS), test_size=4, pool_size=5, seed=2)
    pool, test = task.load("pool"), task.load("test")
    assert len(pool) == 5 and len(test) == 4 and not {e.id for e in pool} & {e.id for e in test}
    msg = error_of(task_of(tmp_path / "d.csv", test_size=12).load, "pool")
    assert "d.csv has 12 rows" in msg and "task.test_size=12" in msg and "hint" in msg


def test_a_json_file_of_json_lines_is_read_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]) + '{"question": "q"}\n')
    msg = error_of(task_of(path, test_size=1).load, "pool")
    assert f"{path}:5: missing field 'answer'" in msg


# --- a folder of split files ---------------------------------------------------------------------


@pytest.mark.parametrize(("train", "test"), [(".json", ".json"), (".csv", ".csv"), (".parquet", ".parquet"),
                                             (".csv", ".jsonl")])
def test_a_folder_with_train_and_test_files_of_any_type(tmp_path: Path, train: str, test: str) -> None:
    write(tmp_path / f"train{train}", ROWS)
    write(tmp_path / f"test{test}", ROWS[:4])
    task = task_of(tmp_path, pool_size=100)
    pool, tests = task.load("pool"), task.load("test")
    assert len(pool) == 12 and [e.question for e in tests] == [r["question"] for r in ROWS[:4]]
    assert pool[0].id == f"jsonl-train-{FIRST_ROW[train]}" and tests[0].id == f"jsonl-test-{FIRST_ROW[test]}"


def test_split_names_pick_the_folder_files_and_two_files_for_one_split_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "dev.csv", ROWS[:6])
    write(tmp_path / "heldout.jsonl", ROWS[6:])
    task = task_of(tmp_path, pool_split="dev", test_split="heldout")
    assert [e.id for e in task.load("pool")][:2] == ["jsonl-dev-2", "jsonl-dev-3"]
    assert task.load("test")[0].question == ROWS[6]["question"]
    write(tmp_path / "dev.json", ROWS[:6])
    msg = error_of(lambda: task_of(tmp_path, pool_split="dev", test_split="heldout"), kind=ConfigError)
    assert "holds dev.json and dev.csv: one split, two files" in msg


# --- save_to_disk folders --------------------------------------------------------------------------


def _saved(folder: Path, splits: dict[str, list[dict]]) -> Path:
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(folder))
    return folder


def test_a_saved_dataset_dict_gives_its_train_and_test_splits(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "dd", {"train": ROWS[:8], "test": ROWS[8:], "validation": ROWS[:2]})
    task = task_of(folder, pool_size=100)
    assert [e.id for e in task.load("test")] == ["jsonl-test-1", "jsonl-test-2", "jsonl-test-3", "jsonl-test-4"]
    assert [e.question for e in task.load("test")] == [r["question"] for r in ROWS[8:]]
    assert len(task.load("pool")) == 8 and task.load("pool")[0].meta == {"row": 1, "file": f"{folder} [split train]"}
    chosen = task_of(folder, pool_split="validation", test_split="train")
    assert len(chosen.load("pool")) == 2 and len(chosen.load("test")) == 8


def test_a_saved_dataset_dict_without_test_split_holds_one_out(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "dd", {"train": ROWS, "validation": ROWS[:2]})
    task = task_of(folder, test_size=3, pool_size=100)
    pool, test = task.load("pool"), task.load("test")
    assert len(test) == 3 and len(pool) == 9 and not {e.id for e in pool} & {e.id for e in test}
    assert all(e.id.startswith("jsonl-train-") for e in pool + test)


def test_split_names_that_the_saved_dataset_lacks_are_config_errors(tmp_path: Path) -> None:
    folder = _saved(tmp_path / "dd", {"train": ROWS, "validation": ROWS[:2]})
    msg = error_of(lambda: task_of(folder, pool_split="dev"), kind=ConfigError)
    assert "task.pool_split='dev'" in msg and "splits: train, validation" in msg
    msg = error_of(lambda: task_of(folder, test_split="test"), kind=ConfigError)
    assert "task.test_split='test'" in msg and "unset it" in msg
    assert "pool_split too" in error_of(lambda: task_of(folder, test_split="train"), kind=ConfigError)


def test_a_saved_dataset_is_one_split_with_a_held_out_test_set(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "my set"))
    task = task_of(tmp_path / "my set", test_size=2, pool_size=100)
    assert len(task.load("test")) == 2 and len(task.load("pool")) == 10
    assert task.load("test")[0].id.startswith("jsonl-my_set-")
    assert "has one split" in error_of(lambda: task_of(tmp_path / "my set", test_split="test"), kind=ConfigError)


# --- column mapping and typed columns --------------------------------------------------------------


def test_column_mapping_reads_other_columns_and_spells_out_typed_values(tmp_path: Path) -> None:
    rows = [{"text": f"Is {i} even?", "label": i % 2 == 0, "n": i} for i in range(6)]
    path = write(tmp_path / "d.parquet", rows)
    boolq = build_task(TaskConfig(name="boolq", path=str(path), question_field="text", answer_field="label", test_size=1))
    examples = boolq.load("pool") + boolq.load("test")
    assert sorted((e.question, e.answer) for e in examples) == sorted((r["text"], str(r["label"])) for r in rows)
    assert {boolq.gold_answer(e.answer) for e in examples} == {"true", "false"}
    numbers = build_task(TaskConfig(name="gsm8k", path=str(path), question_field="text", answer_field="n", test_size=1))
    examples = numbers.load("pool") + numbers.load("test")
    assert {e.id: numbers.gold_answer(e.answer) for e in examples} == {f"gsm8k-d-{i + 1}": str(i) for i in range(6)}


def test_csv_columns_are_mapped_and_kept_as_text(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('prompt,label\n"Say ""007"", please",007\n"two\nlines",3.50\n', encoding="utf-8")
    task = build_task(TaskConfig(name="jsonl", path=str(path), question_field="prompt", answer_field="label", test_size=1))
    examples = sorted(task.load("pool") + task.load("test"), key=lambda e: e.id)
    assert [(e.id, e.question, e.answer) for e in examples] == [
        ("jsonl-d-2", 'Say "007", please', "007"), ("jsonl-d-3", "two\nlines", "3.50")]


# --- the prompt template -------------------------------------------------------------------------


def test_prompt_template_fills_columns_by_hand_checked_strings(tmp_path: Path) -> None:
    template = PromptTemplate("Passage: {passage}\nQuestion: {question}?")
    assert template.fields == ("passage", "question")
    assert template.render({"passage": "Cats sleep.", "question": "do cats sleep", "x": 1}, "f:1") == \
        "Passage: Cats sleep.\nQuestion: do cats sleep?"
    options = PromptTemplate("{stem} (A) {choices[text][0]} (B) {choices[text][1]} {{literal}} #{n}")
    row = {"stem": "Sky?", "choices": {"text": ["blue", "green"], "label": ["A", "B"]}, "n": 7}
    assert options.render(row, "f:1") == "Sky? (A) blue (B) green {literal} #7"
    assert options.fields == ("stem", "choices", "n")


def test_prompt_template_builds_each_question_and_replaces_question_field(tmp_path: Path) -> None:
    rows = [{"passage": r["passage"], "query": r["question"], "answer": r["answer"]} for r in ROWS]
    for ext in (".jsonl", ".csv", ".parquet"):
        task = task_of(write(tmp_path / f"d{ext}", rows), test_size=2, prompt_template="Passage: {passage}\nQuestion: {query}")
        first = min(task.load("pool") + task.load("test"), key=lambda e: int(e.id.rsplit("-", 1)[1]))
        assert first.question == "Passage: 0 is a number.\nQuestion: is 0 odd", ext


@pytest.mark.parametrize(("ext", "where"), [(".jsonl", "d.jsonl:2"), (".csv", "d.csv:3"), (".parquet", "d.parquet, row 2")])
def test_a_placeholder_naming_a_missing_column_names_field_row_and_columns(tmp_path: Path, ext: str, where: str) -> None:
    if ext == ".jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text(json.dumps({"question": "q", "answer": "yes", "passage": "p"}) + "\n"
                        + json.dumps({"question": "q", "answer": "no"}) + "\n")
        expected_columns = "answer, question"
    else:
        path = write(tmp_path / f"d{ext}", [{"question": "q", "answer": "yes"}, {"question": "q", "answer": "no"}])
        where, expected_columns = where.replace(":3", ":2").replace("row 2", "row 1"), "answer, question"
    msg = error_of(task_of(path, test_size=1, prompt_template="{passage} {question}").load, "pool")
    assert f"{tmp_path / where}: task.prompt_template placeholder {{passage}} names a column this row does not have" \
           f" (columns: {expected_columns})" in msg and "hint" in msg


@pytest.mark.parametrize(("template", "says"), [
    ("no placeholder", "has no {column} placeholder"), ("{}", "does not name a column"), ("{0}", "does not name a column"),
    ("{q.__class__}", "reads an attribute"), ("{q", "not a valid template"), ("a } b", "not a valid template"),
])
def test_a_bad_template_is_a_config_error_when_the_task_is_built(tmp_path: Path, template: str, says: str) -> None:
    path = write(tmp_path / "d.jsonl", ROWS)
    assert says in error_of(lambda: task_of(path, prompt_template=template), kind=ConfigError)


# --- the system prompt ---------------------------------------------------------------------------


def test_the_system_prompt_reaches_the_chat_messages(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from star.engine.batching import PLAIN_FRAME, chat_messages, encode_prompts, prompt_text

    task = task_of(write(tmp_path / "d.jsonl", ROWS), system_prompt="Answer yes or no.", test_size=2)
    assert task.system_prompt == "Answer yes or no." and task_of(tmp_path / "d.jsonl").system_prompt is None
    assert chat_messages("Q?", task.system_prompt) == [{"role": "system", "content": "Answer yes or no."},
                                                       {"role": "user", "content": "Q?"}]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert prompt_text(tok, "Q?", task.system_prompt) == "<system>Answer yes or no.\n<user>Q?\n<assistant>"
    assert prompt_text(tok, "Q?") == "<user>Q?\n<assistant>"
    ids = encode_prompts(tok, ["Q?"], 512, system=task.system_prompt)
    assert tok.decode(ids[0]) == "<system>Answer yes or no.\n<user>Q?\n<assistant>"
    tok.chat_template = None
    assert prompt_text(tok, "Q?", "Be brief.") == "Be brief.\n\n" + PLAIN_FRAME.format(prompt="Q?")


# --- errors: rows, columns, extensions, options --------------------------------------------------


def test_typed_rows_name_the_file_row_and_fix(tmp_path: Path) -> None:
    rows = [{"question": "q1", "answer": "yes", "tags": ["a"]}, {"question": "q2", "answer": "no", "tags": []},
            {"question": "q3", "answer": None, "tags": []}]
    path = write(tmp_path / "d.parquet", rows)
    msg = error_of(task_of(path, test_size=1).load, "pool")
    assert f"{path}, row 3: column 'answer' is empty (null)" in msg and "hint" in msg
    msg = error_of(task_of(path, test_size=1, question_field="tags").load, "pool")
    assert f"{path}, row 1: column 'tags' holds a list" in msg and "task.question_field" in msg
    msg = error_of(task_of(path, test_size=1, answer_field="label").load, "pool")
    assert f"{path}, row 1: missing column 'label' (columns: answer, question, tags)" in msg
    assert "set task.answer_field" in msg
    good = write(tmp_path / "g.parquet", [{"question": "q", "answer": "maybe"}, {"question": "q", "answer": "yes"}])
    msg = error_of(task_of(good, test_size=1).load, "pool")
    assert f"{good}, row 1: field 'answer' = 'maybe' is not a valid jsonl answer" in msg


@pytest.mark.parametrize(("content", "says"), [
    ("question,answer\nq,yes\nq,no,extra\n", "d.csv:3: the row has 3 fields and the header 2"),
    ("question,answer\nq,yes\n\"q,no\n", "d.csv:3: not well-formed CSV"),
    ("question,answer\nq,\n", "d.csv:2: field 'answer' is empty"),
    ("question,question\nq,yes\n", "d.csv:1: the header names column 'question' twice"),
    ("question,answer\n", "is empty (a header and no rows)"),
    ("question,answer\nq,maybe\n", "d.csv:2: field 'answer' = 'maybe' is not a valid jsonl answer"),
])
def test_csv_errors_name_the_file_and_line(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(content, encoding="utf-8")
    msg = error_of(task_of(path, test_size=1).load, "pool")
    assert says in msg and "hint" in msg


def test_non_utf8_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"question,answer\nq,yes\ncaf\xe9,no\n")
    assert "d.csv:3: byte 0xe9 is not valid UTF-8" in error_of(task_of(path, test_size=1).load, "pool")


@pytest.mark.parametrize(("content", "says"), [
    ('[{"question": "q", "answer": "yes"}, ["q", "no"]]', "d.json, row 2: expected a JSON object, got list"),
    ('[{"question": "q", "answer": "yes"},\n {"question": ]', "d.json:2: malformed JSON at column 15"),
    ('[{"question": "q", "answer": "yes"}, {"question": "q", "answer": 1}]', "d.json, row 2: field 'answer' must be a string"),
    ("[]", "is empty"),
])
def test_json_array_errors_name_the_file_and_row(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "d.json"
    path.write_text(content, encoding="utf-8")
    msg = error_of(task_of(path, test_size=1).load, "pool")
    assert says in msg and "hint" in msg


def test_a_bad_parquet_file_is_one_data_error(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    msg = error_of(task_of(path, test_size=1).load, "pool")
    assert f"{path} cannot be read as Parquet" in msg and "hint" in msg


def test_path_errors_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("question,answer\n")
    msg = error_of(lambda: task_of(tmp_path / "d.txt"), kind=ConfigError)
    assert "not a folder, nor a .jsonl, .json, .csv or .parquet file" in msg and "save_to_disk" in msg
    msg = error_of(lambda: task_of(tmp_path, hub="org/data"), kind=ConfigError)
    assert "task.path" in msg and "task.hub='org/data'" in msg and "both set" in msg
    msg = error_of(lambda: build_task(TaskConfig(prompt_template="{question}")), kind=ConfigError)
    assert "task.prompt_template" in msg and "arithmetic" in msg
    msg = error_of(lambda: task_of(write(tmp_path / "d.jsonl", ROWS), test_split="test"), kind=ConfigError)
    assert "task.test_split='test'" in msg and "one split" in msg


# --- the Hub, offline ----------------------------------------------------------------------------


def test_a_hub_dataset_offline_is_one_clear_error_without_touching_the_network(offline: list) -> None:
    pytest.importorskip("datasets")
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    task = build_task(TaskConfig(**CHOICE, hub="star-tests/no-such-dataset", hub_config="main"))  # nothing read yet
    msg = error_of(task.load, "pool")
    assert "task.hub='star-tests/no-such-dataset'" in msg and "seems offline (HF_HUB_OFFLINE is set)" in msg
    assert "load_dataset('star-tests/no-such-dataset', 'main').save_to_disk('no-such-dataset')" in msg
    assert "task.path=no-such-dataset" in msg and "Traceback" not in msg
    assert offline == []  # no host was looked up


def test_without_hf_hub_offline_an_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch, offline: list) -> None:
    datasets = pytest.importorskip("datasets")
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    asked: list = []

    def unreachable(self, repo_id, **kwargs):
        asked.append((repo_id, kwargs.get("timeout")))
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset must not run offline"))
    msg = error_of(build_task(TaskConfig(**CHOICE, hub="org/data")).load, "test")
    assert "seems offline (the Hub cannot be reached" in msg and "HF_HUB_OFFLINE=1" in msg and "save_to_disk" in msg
    assert asked == [("org/data", 10.0)]


def test_a_source_that_needs_datasets_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    for task in (task_of(path, test_size=1), build_task(TaskConfig(**CHOICE, hub="org/data"))):
        msg = error_of(task.load, "pool", kind=ConfigError)
        assert "needs the Hugging Face `datasets` package" in msg and 'pip install "star-al[data]"' in msg


def test_text_files_are_read_without_importing_datasets(tmp_path: Path) -> None:
    for ext in (".jsonl", ".json", ".csv"):
        write(tmp_path / f"d{ext}", ROWS)
    code = ("import sys; from star.config import TaskConfig; from star.tasks import build_task\n"
            f"for ext in ('.jsonl', '.json', '.csv'):\n"
            f"    t = build_task(TaskConfig(name='jsonl', path={str(tmp_path)!r} + '/d' + ext, test_size=2))\n"
            "    assert len(t.load('pool')) == 10\n"
            "assert 'datasets' not in sys.modules, 'datasets was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
