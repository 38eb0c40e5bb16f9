"""Answer extraction, targets, gold answers and answer spans of the file-backed tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from star.config import TaskConfig
from star.tasks import Task, build_task
from star.tasks.numeric import canonical_number

DATASETS = Path(__file__).parents[3] / "shared" / "datasets"
FOLDERS = {"gsm8k": "GSM8K", "boolq": "BoolQ", "obqa": "OBQA"}


def make_task(tmp_path: Path, name: str, **extra: object) -> Task:
    """A task over an empty folder (extraction needs no data)."""
    return build_task(TaskConfig(name=name, path=str(tmp_path), **extra))


@pytest.fixture
def gsm8k(tmp_path: Path) -> Task:
    return make_task(tmp_path, "gsm8k")


@pytest.fixture
def boolq(tmp_path: Path) -> Task:
    return make_task(tmp_path, "boolq")


@pytest.fixture
def obqa(tmp_path: Path) -> Task:
    return make_task(tmp_path, "obqa")


def span_text(task: Task, text: str) -> str | None:
    """The characters `answer_span` points at."""
    span = task.answer_span(text)
    return None if span is None else text[span[0]:span[1]]


# --- GSM8K --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "span"),
    [
        ("The final answer is 1,234.", "1234", "1,234"),
        ("The final answer is $1,200, so done", "1200", "1,200"),
        ("I have 3 apples and 4 pears, so 7 in total.", "7", "7"),
        ("The final answer is 18 dollars, not 20.", "18", "18"),
        ("the FINAL answer is 42", "42", "42"),
        ("The final answer is -3.50.", "-3.5", "-3.50"),
        ("The final answer is 7.0", "7", "7.0"),
        ("The final answer is 15 gallons, times 8 pints = 120\nThe final answer is 120", "120", "120"),
        ("First 12 then 5. The final answer is", "5", "5"),
        ("no number here", None, None),
        ("", None, None),
    ],
)
def test_gsm8k_extract_and_span(gsm8k: Task, text: str, expected: str | None, span: str | None) -> None:
    assert gsm8k.extract(text) == expected
    assert span_text(gsm8k, text) == span


def test_gsm8k_prompt_target_gold(gsm8k: Task) -> None:
    answer = "She has 2 + 3 = <<2+3=5>>5 apples.\n#### 1,005"
    assert gsm8k.prompt("Q?") == "Q?\nAnswer the above question. First think step by step and then answer the final number."
    assert gsm8k.target(answer) == "She has 2 + 3 = <<2+3=5>>5 apples.\nThe final answer is 1,005"
    assert gsm8k.gold_answer(answer) == "1005"
    assert gsm8k.is_correct(gsm8k.extract(gsm8k.target(answer)), answer)
    assert gsm8k.is_correct("1005", "#### 1005") and not gsm8k.is_correct("105", answer)
    assert not gsm8k.is_correct(None, answer)
    assert gsm8k.choices is None and gsm8k.answer_type == "number"


def test_gsm8k_complete_and_labels(gsm8k: Task) -> None:
    assert not gsm8k.answer_complete("The final answer is 12")
    assert gsm8k.answer_complete("The final answer is 12\n")
    assert gsm8k.check_label("work\n#### 12") is None
    assert gsm8k.check_label("work\n#### twelve") is not None
    assert gsm8k.check_label("no number at all") is not None


# --- BoolQ --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "span"),
    [
        ("the correct answer is true", "true", "true"),
        ("The Correct Answer Is FALSE.", "false", "FALSE"),
        ("the correct answer is: 'True'", "true", "True"),
        ("True", "true", "True"),
        ("**False**, because ...", "false", "False"),
        ("Yes, it is.", "true", "Yes"),
        ("No.", "false", "No"),
        ("the correct answer is no", "false", "no"),
        ("There is no doubt that it is true.", "true", "true"),
        ("It is true that x. Hence the correct answer is false", "false", "false"),
        ("The answer is not clear. False.", "false", "False"),
        ("It is untrue.", None, None),
        ("Answer format: true/false", None, None),
        ("the correct answer is true or false", None, None),
        ("nothing to see", None, None),
        ("notable", None, None),
        ("", None, None),
    ],
)
def test_boolq_extract_and_span(boolq: Task, text: str, expected: str | None, span: str | None) -> None:
    assert boolq.extract(text) == expected
    assert span_text(boolq, text) == span


@pytest.mark.parametrize(
    ("label", "gold"),
    [
        ("the correct answer is true", "true"),
        ("the correct answer is True", "true"),
        ("The correct answer is FALSE.", "false"),
        ("true", "true"),
        ("False", "false"),
        (" yes ", "true"),
        ("no", "false"),
    ],
)
def test_boolq_gold_and_target(boolq: Task, label: str, gold: str) -> None:
    assert boolq.check_label(label) is None
    assert boolq.gold_answer(label) == gold
    assert boolq.target(label) == f"the correct answer is {gold}"
    assert boolq.is_correct(boolq.extract(boolq.target(label)), label)


@pytest.mark.parametrize("label", ["maybe", "the correct answer is maybe", "", "true or false", "it is true"])
def test_boolq_rejects_unresolvable_labels(boolq: Task, label: str) -> None:
    assert boolq.check_label(label) is not None


def test_boolq_choices_and_complete(boolq: Task) -> None:
    assert boolq.choices == ("true", "false")
    assert boolq.choice_texts() == ["the correct answer is true", "the correct answer is false"]
    assert not boolq.answer_complete("the correct answer is")
    assert not boolq.answer_complete("the correct answer is true")  # could still go on ' or false'
    assert not boolq.answer_complete("the correct answer is true or")
    assert boolq.answer_complete("the correct answer is true.")
    assert boolq.answer_complete("the correct answer is false because x")
    assert boolq.answer_complete("True\n")
    assert not boolq.answer_complete("It is true that the sky")  # a loose word mid-sentence does not stop decoding


# --- OpenBookQA ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "span"),
    [
        ("B", "B", "B"),
        ("(B)", "B", "B"),
        ("B)", "B", "B"),
        ("B.", "B", "B"),
        ("**C**", "C", "C"),
        ("[d]", "D", "d"),
        ("The correct answer is B", "B", "B"),
        ("answer: (c)", "C", "c"),
        ("The correct answer is AnswerD: plants sprouting", "D", "D"),
        ("AnswerB", "B", "B"),
        ("The correct answer is A plant needs water", "A", "A"),
        ("The correct answer is B because AnswerC is wrong", "B", "B"),
        ("D quit eating lunch out", "D", "D"),
        ("c) bunnies", "C", "c"),
        ("A, because plants need light", "A", "A"),
        ("A.", "A", "A"),
        ("I think (C) is right", "C", "C"),
        ("option C is best", "C", "C"),
        ("A plant needs sunlight", None, None),
        ("a plant", None, None),
        ("(a plant)", None, None),
        ("the answer is a marsh", None, None),
        ("vitamin C is good for you", None, None),
        ("Bees make honey", None, None),
        ("none of them", None, None),
        ("", None, None),
    ],
)
def test_obqa_extract_and_span(obqa: Task, text: str, expected: str | None, span: str | None) -> None:
    assert obqa.extract(text) == expected
    assert span_text(obqa, text) == span


def test_obqa_target_gold_labels(obqa: Task) -> None:
    assert obqa.choices == ("A", "B", "C", "D") and obqa.choice_texts() == ["A", "B", "C", "D"]
    for label in ["C", " c ", "(C)", "The correct answer is C"]:
        assert obqa.check_label(label) is None
        assert obqa.gold_answer(label) == "C" and obqa.target(label) == "C"
    for bad in ["E", "AB", "", "plants"]:
        assert obqa.check_label(bad) is not None
    assert obqa.is_correct("B", "B") and not obqa.is_correct("A", "B")


def test_obqa_complete(obqa: Task) -> None:
    assert not obqa.answer_complete("")
    assert not obqa.answer_complete("A")  # may become 'A plant ...'
    assert not obqa.answer_complete("A plant needs")
    assert obqa.answer_complete("A\n")
    assert obqa.answer_complete("(B)")
    assert obqa.answer_complete("The correct answer is D.")
    assert not obqa.answer_complete("I think (C) is")  # a mention mid-text does not stop decoding


# --- generic jsonl ------------------------------------------------------------------------


def test_jsonl_number_follows_gsm8k(tmp_path: Path) -> None:
    task = make_task(tmp_path, "jsonl", answer_type="number")
    assert task.target("42") == "The final answer is 42"
    assert task.extract("so 1,000 + 2 = 1,002") == "1002"
    assert task.is_correct(task.extract(task.target("1,002")), "1002")
    assert task.check_label("forty-two") is not None


def test_jsonl_choice_longest_whole_word(tmp_path: Path) -> None:
    task = make_task(tmp_path, "jsonl", answer_type="choice", choices=["York", "New York", "Paris"])
    assert task.extract("I'd say new  york.") == "New York"
    assert span_text(task, "I'd say new  york.") == "new  york"
    assert task.extract("Yorkshire or Parisian") is None
    assert task.extract("not Paris: the answer is York") == "York"
    assert task.extract("PARIS") == "Paris"
    assert task.target("paris") == "Paris" and task.gold_answer(" new york ") == "New York"
    assert task.check_label("London") is not None and task.check_label("paris") is None
    assert task.answer_complete("Paris\n") and not task.answer_complete("New")


def test_jsonl_text_normalized_exact_match(tmp_path: Path) -> None:
    task = make_task(tmp_path, "jsonl", answer_type="text")
    assert task.extract("  Hello\n  World ") == "hello world"
    assert task.is_correct(task.extract("HELLO world"), " hello   World")
    assert not task.is_correct(task.extract("hello world!"), "hello world")
    assert task.extract("   ") is None
    assert span_text(task, "  Hi there \n") == "Hi there"
    assert task.target("  Hi  ") == "Hi"


# --- the real benchmark files -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_real_dataset_answers_round_trip(name: str) -> None:
    folder = DATASETS / FOLDERS[name]
    if not (folder / "train.jsonl").is_file() or not (folder / "test.jsonl").is_file():
        pytest.skip(f"{folder} is absent")
    task = build_task(TaskConfig(name=name, path=str(folder), pool_size=10**6, test_size=10**6))
    for split in ("pool", "test"):
        examples = task.load(split)
        assert examples and len({e.id for e in examples}) == len(examples)
        for e in examples:
            assert e.answer is not None and task.check_label(e.answer) is None, e.id
            target = task.target(e.answer)
            prediction = task.extract(target)
            assert prediction is not None and task.is_correct(prediction, e.answer), (e.id, target)
            assert task.answer_complete(target + "\n"), e.id
            if task.choices is not None:
                assert task.gold_answer(e.answer) in task.choices, e.id


def test_real_dataset_spans_point_at_the_answer() -> None:
    folder = DATASETS / "GSM8K"
    if not (folder / "test.jsonl").is_file():
        pytest.skip(f"{folder} is absent")
    task = build_task(TaskConfig(name="gsm8k", path=str(folder), test_size=200))
    for e in task.load("test"):
        target = task.target(e.answer)
        assert canonical_number(span_text(task, target) or "") == task.gold_answer(e.answer), e.id
