"""The LLM annotator on a scripted backend: label forms per task, retries of invalid replies, fallbacks,
commit-as-you-go with a crash and a resume that asks nothing twice, the ledger's tokens and cost."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from star.annotation.answers import answer_problem
from star.annotation.chat import Reply
from star.annotation.commit import correct_labels, import_labels
from star.annotation.context import RoundContext
from star.annotation.human import HumanAnnotator
from star.annotation.llm import LLMAnnotator, answer_instruction, reply_label
from star.annotation.llm_ledger import Ledger, Prices
from star.annotation.oracle import Oracle
from star.annotation.registry import ANNOTATORS, AnnotatorDeps
from star.config import LLMAnnotatorConfig, TaskConfig, build_config, dump_config
from star.errors import ConfigError
from star.store.io import read_appended_jsonl, read_jsonl
from star.store.labels import LabelStore
from star.store.runs import RunDir
from star.tasks import build_task
from star.tasks.arithmetic import ArithmeticTask
from star.tasks.base import Task

MODEL = "big-model"
NAME = f"llm:{MODEL}"


class ScriptedChat:
    """A ChatBackend answering from `answer(question, conversation)`; `crash_at` raises on that request (0-based)."""

    def __init__(self, answer: Callable[[str, list[dict]], str], batch_size: int = 2, crash_at: int | None = None,
                 prompt_tokens: int = 1000, completion_tokens: int = 500) -> None:
        self.answer, self.batch_size, self.crash_at = answer, batch_size, crash_at
        self.tokens = (prompt_tokens, completion_tokens)
        self.asked: list[list[dict]] = []

    def complete(self, conversations: Sequence[Sequence[dict]]) -> list[Reply]:
        replies = []
        for conv in conversations:
            if self.crash_at is not None and len(self.asked) == self.crash_at:
                raise RuntimeError("the backend died")  # the batch's replies so far are lost with it
            self.asked.append(list(conv))
            question = next(m["content"] for m in conv if m["role"] == "user").split("\n\n")[0]
            replies.append(Reply(self.answer(question, list(conv)), *self.tokens))
        return replies

    def questions(self) -> list[str]:
        return [next(m["content"] for m in c if m["role"] == "user").split("\n\n")[0] for c in self.asked]


def make_ctx(folder: Path, task: Task | None = None, n: int = 6, annotator: str = "llm") -> tuple[RoundContext, Oracle]:
    """Round 0 of a run directory (config.yaml written, so `star label` works on it) with `n` pool examples."""
    cfg = build_config({"output_dir": str(folder / "run"),
                        "task": {"name": "arithmetic", "pool_size": n, "test_size": 2, "max_steps": 2},
                        "al": {"initial": n, "query": 1, "rounds": 1, "annotator": annotator}})
    task = task or ArithmeticTask(n, 2, seed=0, max_steps=2)
    pool = task.load("pool")[:n]
    run = RunDir.create(cfg.output_dir)
    run.write_config(dump_config(cfg))
    ctx = RoundContext(LabelStore(run.labels_path), run, task, 0, {e.id: e.question for e in pool},
                       suggest=lambda ids: ["The final answer is 1"] * len(ids))
    return ctx, Oracle(pool)


def gold_by_question(oracle: Oracle, ctx: RoundContext) -> dict[str, str]:
    ids = list(ctx.questions)
    return {ctx.questions[i]: ctx.task.gold_answer(g) for i, g in zip(ids, oracle.gold(ids))}


def annotator(backend: ScriptedChat, oracle: Oracle, fallback=None, **settings) -> LLMAnnotator:
    s = LLMAnnotatorConfig(model=MODEL, **settings)
    return LLMAnnotator(s, lambda: backend, fallback or HumanAnnotator(), gold=oracle.gold)


def stored(ctx: RoundContext) -> dict[str, tuple[str, str]]:
    return {lab.example_id: (lab.answer, lab.annotator) for lab in ctx.store.all()}


def file_task(tmp_path: Path, name: str, **more) -> Task:
    """A file-backed task (one train and one test line) to check reply parsing against."""
    answers = {"obqa": "A", "boolq": "the correct answer is true", "jsonl": more.get("answer", "x")}
    folder = tmp_path / f"{name}-{more.get('answer_type', '')}"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"{split}.jsonl").write_text(json.dumps({"question": "q?", "answer": answers[name]}) + "\n")
    more.pop("answer", None)
    return build_task(TaskConfig(name=name, path=str(folder), pool_size=1, test_size=1, **more))


# --- one reply -> one label --------------------------------------------------------------------

def test_a_reply_becomes_a_label_in_the_tasks_own_form(tmp_path):
    arithmetic = ArithmeticTask(2, 2)
    label, problem = reply_label(arithmetic, "3 + 4 = 7.\nThen 7 * 2 = 14.\n**The final answer is: $14**.")
    assert (label, problem) == ("3 + 4 = 7.\nThen 7 * 2 = 14.\n#### 14", None)
    assert arithmetic.gold_answer(label) == "14" and answer_problem(arithmetic, label) is None
    assert arithmetic.target(label).endswith("The final answer is 14")
    assert reply_label(arithmetic, "The final answer is 1,234.0", keep_reasoning=True) == ("#### 1234", None)
    assert reply_label(arithmetic, "So 5 - 2 = 3. The final answer is 3", keep_reasoning=False) == ("#### 3", None)
    label, problem = reply_label(arithmetic, "I cannot tell.")
    assert label is None and "no answer could be read" in problem and "final number" in problem
    assert reply_label(arithmetic, "   ") == (None, "the reply is empty")

    obqa = file_task(tmp_path, "obqa")
    assert reply_label(obqa, "Plants need light. The answer is C.") == ("C", None)
    assert reply_label(obqa, "a plant needs water")[0] is None  # the article 'a' is no answer
    boolq = file_task(tmp_path, "boolq")
    assert reply_label(boolq, "The answer is True.") == ("true", None)
    assert boolq.target("true") == boolq.target("the correct answer is true")  # the same training target as gold's
    choice = file_task(tmp_path, "jsonl", answer_type="choice", choices=["positive", "negative"], answer="positive")
    assert reply_label(choice, "It is clearly NEGATIVE overall. The answer is negative") == ("negative", None)
    assert reply_label(choice, "neutral")[0] is None
    text = file_task(tmp_path, "jsonl", answer_type="text", answer="Paris")
    assert reply_label(text, "  Paris \n") == ("Paris", None)


def test_the_instruction_names_the_format_the_extraction_reads(tmp_path):
    assert "The final answer is N" in answer_instruction(ArithmeticTask(1, 1))
    assert "A, B, C, D" in answer_instruction(file_task(tmp_path, "obqa"))


# --- a round -----------------------------------------------------------------------------------

def test_labels_are_committed_as_they_arrive_and_a_resume_asks_nothing_twice(tmp_path):
    ctx, oracle = make_ctx(tmp_path, n=6)
    gold = gold_by_question(oracle, ctx)
    ids = list(ctx.questions)

    def right(question: str, conv: list[dict]) -> str:
        return f"Counting. The final answer is {gold[question]}."

    dying = ScriptedChat(right, batch_size=2, crash_at=4)  # batches of 2: the third batch dies on its first request
    with pytest.raises(RuntimeError, match="died"):
        annotator(dying, oracle).acquire(ctx, ids)
    first = stored(ctx)
    assert sorted(first) == sorted(ids[:4]) and {who for _, who in first.values()} == {NAME}
    assert all(ctx.task.gold_answer(a) == gold[ctx.questions[i]] for i, (a, _) in first.items())
    assert [r["id"] for r in read_appended_jsonl(ctx.run.llm_ledger_path)] == ids[:4]  # paid for = in the ledger

    fresh = ScriptedChat(right, batch_size=2)
    assert annotator(fresh, oracle).acquire(ctx, ids) == []
    assert fresh.questions() == [ctx.questions[i] for i in ids[4:]]  # only what had no label
    assert {i: a for i, (a, _) in stored(ctx).items() if i in first} == {i: a for i, (a, _) in first.items()}
    again = ScriptedChat(right)
    assert annotator(again, oracle).acquire(ctx, ids) == [] and again.asked == []


def test_an_answer_paid_for_but_not_committed_is_committed_from_the_ledger(tmp_path):
    ctx, oracle = make_ctx(tmp_path, n=3)
    ids = list(ctx.questions)
    real_add = ctx.store.add

    def killed_on_second(example_id, answer, who, t):
        if example_id == ids[1]:
            raise KeyboardInterrupt  # a kill between the ledger line and the commit
        return real_add(example_id, answer, who, t)

    ctx.store.add = killed_on_second
    with pytest.raises(KeyboardInterrupt):
        annotator(ScriptedChat(lambda q, c: "The final answer is 5"), oracle).acquire(ctx, ids)
    ctx.store.add = real_add
    assert sorted(stored(ctx)) == [ids[0]]
    resumed = ScriptedChat(lambda q, c: "The final answer is 5")
    assert annotator(resumed, oracle).acquire(ctx, ids) == []
    assert resumed.questions() == [ctx.questions[ids[2]]]  # ids[1]'s answer came from the ledger, not a new request
    assert stored(ctx)[ids[1]] == ("#### 5", NAME)


def test_an_invalid_reply_is_asked_again_with_the_problem_then_goes_to_people(tmp_path, monkeypatch):
    ctx, oracle = make_ctx(tmp_path, n=3)
    ids = list(ctx.questions)
    stubborn = ctx.questions[ids[1]]
    late = ctx.questions[ids[2]]

    def answer(question: str, conv: list[dict]) -> str:
        if question == stubborn:
            return "I would rather not say."
        if question == late and len(conv) < 4:
            return "Hmm."  # the second try, told what was wrong, answers
        return "The final answer is 2"

    chat = ScriptedChat(answer, batch_size=3)
    assert annotator(chat, oracle, answer_retries=1).acquire(ctx, ids) == [ids[1]]
    assert chat.questions().count(stubborn) == 2 and chat.questions().count(late) == 2
    retry = next(c for c in chat.asked if len(c) == 4 and c[1]["content"].startswith(stubborn))
    assert [m["role"] for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"] == "I would rather not say." and "no valid answer" in retry[3]["content"]
    assert sorted(stored(ctx)) == sorted([ids[0], ids[2]])
    todo = read_jsonl(ctx.run.round_dir(0) / "todo.jsonl")
    assert [r["id"] for r in todo] == [ids[1]]  # the human fallback's todo file: `star label` / `star annotate`

    asked_again = ScriptedChat(answer)
    assert annotator(asked_again, oracle, answer_retries=1).acquire(ctx, ids) == [ids[1]]
    assert asked_again.asked == []  # given up on: never asked (nor paid) again
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"id": ids[1], "answer": "42"}) + "\n")
    assert import_labels(ctx.run.path, answers) == 1
    assert annotator(ScriptedChat(answer), oracle).acquire(ctx, ids) == []
    metrics = annotator(ScriptedChat(answer), oracle, answer_retries=1).round_metrics(ctx)
    assert (metrics["llm_labels"], metrics["llm_requests"], metrics["llm_invalid"], metrics["llm_unanswered"]) == (2, 5, 3, 1)


def test_the_oracle_fallback_labels_what_the_llm_could_not_and_counts_the_reads(tmp_path):
    ctx, oracle = make_ctx(tmp_path, n=3)
    ids = list(ctx.questions)
    silent = ctx.questions[ids[0]]
    chat = ScriptedChat(lambda q, c: "no idea" if q == silent else "The final answer is 2")
    assert annotator(chat, oracle, fallback=oracle, answer_retries=0).acquire(ctx, ids) == []
    who = {i: w for i, (_, w) in stored(ctx).items()}
    assert who == {ids[0]: "oracle", ids[1]: NAME, ids[2]: NAME} and oracle.reads == 1


def test_round_metrics_count_tokens_cost_and_agreement_with_the_gold_labels(tmp_path):
    ctx, oracle = make_ctx(tmp_path, n=4)
    gold = gold_by_question(oracle, ctx)
    ids = list(ctx.questions)
    wrong = ctx.questions[ids[3]]
    chat = ScriptedChat(lambda q, c: f"The final answer is {int(gold[q]) + (1 if q == wrong else 0)}",
                        prompt_tokens=1000, completion_tokens=500)
    llm = annotator(chat, oracle, price_prompt_per_1k=0.5, price_completion_per_1k=1.5)
    llm.acquire(ctx, ids)
    m = llm.round_metrics(ctx)
    assert m["llm_annotator"] == NAME and m["llm_labels"] == 4 and m["llm_compared"] == 4
    assert m["llm_agreement"] == 0.75
    assert (m["llm_requests"], m["llm_prompt_tokens"], m["llm_completion_tokens"]) == (4, 4000, 2000)
    assert m["llm_cost"] == pytest.approx(4 * (0.5 + 0.75))
    later = annotator(ScriptedChat(lambda q, c: "x"), oracle).round_metrics(ctx)  # unpriced now: the ledger's cost stays
    assert later["llm_cost"] == pytest.approx(5.0) and later["llm_prompt_tokens"] == 4000


def test_prices_per_thousand_tokens():
    assert Prices().cost(1000, 1000) is None
    assert Prices(2.0, None).cost(1500, 999) == pytest.approx(3.0)
    assert Prices(0.15, 0.6).cost(2000, 250) == pytest.approx(0.3 + 0.15)


def test_the_ledger_drops_a_line_torn_by_a_kill(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    ledger.append({"event": "reply", "round": 0, "id": "a", "annotator": NAME})
    with open(ledger.path, "a") as f:
        f.write('{"event": "reply", "round": 0, "id": "b", "annot')
    assert [r["id"] for r in ledger.records(0, NAME)] == ["a"]
    ledger.append({"event": "reply", "round": 0, "id": "c", "annotator": NAME})
    assert [r["id"] for r in ledger.records(0, NAME)] == ["a", "c"] and ledger.records(1, NAME) == []


def test_llm_labels_can_be_corrected_by_a_person(tmp_path):
    ctx, oracle = make_ctx(tmp_path, n=2)
    ids = list(ctx.questions)
    annotator(ScriptedChat(lambda q, c: "The final answer is 9"), oracle).acquire(ctx, ids)
    fixes = tmp_path / "fixes.jsonl"
    fixes.write_text(json.dumps({"id": ids[0], "answer": "#### 11"}) + "\n")
    [(old, new)] = correct_labels(ctx.run.path, fixes, annotator="reviewer")
    assert (old.annotator, old.answer, new.annotator, new.answer) == (NAME, "#### 9", "reviewer", "#### 11")
    assert [h.annotator for h, _ in ctx.store.history(ids[0])] == [NAME]


def test_the_registry_builds_the_llm_annotator_on_either_backend(tmp_path):
    pool = ArithmeticTask(4, 2).load("pool")
    local = build_config({"al": {"annotator": "llm"}, "llm_annotator": {"model": "some/model"}})
    made: list[str] = []
    llm = ANNOTATORS["llm"](AnnotatorDeps(Oracle(pool), local, local_chat=lambda: made.append("chat") or "backend"))
    assert llm.name == "llm:some/model" and made == ["chat"] and llm.backend() == "backend"
    with pytest.raises(ConfigError, match="only a run"):
        ANNOTATORS["llm"](AnnotatorDeps(Oracle(pool), local))
    remote = build_config({"al": {"annotator": "llm"}, "llm_annotator": {
        "backend": "openai", "model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "STAR_TEST_NO_SUCH_KEY"}})
    with pytest.raises(ConfigError, match="STAR_TEST_NO_SUCH_KEY is not set"):
        ANNOTATORS["llm"](AnnotatorDeps(Oracle(pool), remote))


@pytest.mark.parametrize(("settings", "message"), [
    ({"backend": "openai"}, "backend=openai needs base_url"),
    ({"backend": "openai", "base_url": "localhost:8000/v1"}, "must start with http:// or https://"),
    ({"base_url": "http://x/v1"}, "base_url is used only with backend=openai"),
    ({"temperature": 0.7}, "decodes greedily"),
    ({"prompt": "Q: {question} {answer}"}, "unknown placeholder(s) {answer}"),
    ({"prompt": "Answer this."}, "must hold {question}"),
    ({"prompt": "{question} {"}, "literal brace"),
    ({"backend": "openai", "base_url": "http://x/v1", "api_key_env": "sk-secret-123"}, "never the key itself"),
    ({"answer_retries": -1}, "greater than or equal to 0"),
])
def test_llm_annotator_settings_are_checked(settings, message):
    with pytest.raises(ConfigError) as info:
        build_config({"al": {"annotator": "llm"}, "llm_annotator": settings})
    assert message in str(info.value) and "llm_annotator" in str(info.value)
    assert "sk-secret-123" not in str(info.value)  # a key pasted by mistake is not echoed


def test_only_runs_that_use_it_write_the_llm_section():
    assert "llm_annotator" not in dump_config(build_config({}))
    assert "llm_annotator" in dump_config(build_config({"al": {"annotator": "llm"}}))
    assert "llm_annotator" in dump_config(build_config({"llm_annotator": {"model": "m"}}))
