"""OpenBookQA: four-option science questions ('AnswerA ... AnswerD'), labelled with a letter A-D.

Two option styles (`task.option_style`), the label a letter either way:
  - letter: the prompt is the whole question, options listed; the target is the letter.
  - cloze (as lm-evaluation-harness): the prompt is the question stem alone, and the scored (and
    trained) answers are the four option texts; the target is the gold option's text.
People and LLM annotators always see the whole question and answer with a letter.

Extraction rule (the result is 'A'-'D'), first rule that hits:
  1. the letter after the last 'answer is' / 'answer:' / 'answer =' ('The correct answer is B',
     'answer: (c)', 'The correct answer is AnswerD: plants ...');
  2. the letter that opens the output ('B', '(B)', 'B)', 'B.', '**C**', 'AnswerB', 'Option c.');
  3. the first bracketed letter '(B)' / '[B]', or 'option B' / 'choice B', anywhere.
A letter must stand alone (not followed by a letter or digit). It is always accepted when
bracketed, or followed by ')', '.', ':', ',', ';', a line break or the end of the text.
Otherwise, i.e. followed by a space and more words: an uppercase letter is accepted after a
marker or an 'Answer'/'option'/'choice' prefix; at the start of the output only B, C and D are,
because 'A plant needs ...' is the article; a lowercase letter never is ('the answer is a marsh').
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from star.config import TaskConfig
from star.errors import DataError
from star.tasks.base import Example
from star.tasks.files import FileTask
from star.tasks.sources import Rows

LETTERS = ("A", "B", "C", "D")
_PRE = r"[\s\"'*:]*"
_PREFIX = r"(?P<prefix>(?:answer|option|choice)\s*)?"
_LETTER = r"(?P<open>[(\[]\s*)?(?P<letter>[A-Da-d])(?![A-Za-z0-9])"
_AFTER_MARKER = re.compile(r"answer\s*(?:is\b|[:=])" + _PRE + _PREFIX + _LETTER, re.IGNORECASE)
_AT_START = re.compile(r"^" + _PRE + _PREFIX + _LETTER, re.IGNORECASE)
_ANYWHERE = re.compile(
    r"(?:(?<![A-Za-z])(?P<prefix>(?:option|choice)\s*)" + _LETTER + r")|(?:(?P<open2>[(\[])(?P<letter2>[A-Da-d])\s*[)\]])",
    re.IGNORECASE,
)
_ENDS = re.compile(r"[ \t]*(?:[).\]:,;]|\n|$)")
_LABEL = re.compile(r"\s*(?:the\s+correct\s+answer\s+is\s*:?\s*)?[(\[]?\s*([A-Da-d])\s*[)\]]?\s*[.:]?\s*", re.IGNORECASE)

_OPTIONS = re.compile(r"(?P<stem>.*?)\s*" + "".join(rf"\n\s*Answer{c}\s*:?\s*(?P<{c}>.*?)\s*" for c in LETTERS)
                      + r"(?:\n\s*The correct answer is\s*:?\s*)?", re.DOTALL)


@lru_cache(maxsize=8192)
def split_options(question: str) -> tuple[str, tuple[str, ...]] | None:
    """(stem, the four option texts A-D) of a question written 'stem\\nAnswerA: ...\\nAnswerD: ...', or None."""
    m = _OPTIONS.fullmatch(question)
    if m is None or not m.group("stem") or not all(m.group(c) for c in LETTERS):
        return None
    return m.group("stem"), tuple(m.group(c) for c in LETTERS)


def _group(m: re.Match[str]) -> str:
    """Name of the group holding the letter in a match of any rule."""
    return "letter" if m.group("letter") is not None else "letter2"


def _accepted(m: re.Match[str], text: str, context: bool) -> bool:
    """Whether a candidate letter is an answer rather than a word (see the module rule)."""
    if m.groupdict().get("letter2") is not None:
        return True
    letter, after = m.group("letter"), text[m.end("letter"):]
    if m.group("open"):
        return re.match(r"\s*(?:[)\]]|$)", after) is not None
    if _ENDS.match(after):
        return True
    if context or m.group("prefix"):
        return letter.isupper()
    return letter in "BCD"


def _strong_match(text: str) -> re.Match[str] | None:
    """Rule 1 (last marker with an accepted letter) or rule 2 (the opening letter)."""
    for m in reversed(list(_AFTER_MARKER.finditer(text))):
        if _accepted(m, text, context=True):
            return m
    m = _AT_START.search(text)
    return m if m is not None and _accepted(m, text, context=False) else None


def _match(text: str) -> re.Match[str] | None:
    """The match the extraction rules pick, or None."""
    strong = _strong_match(text)
    if strong is not None:
        return strong
    return next((m for m in _ANYWHERE.finditer(text) if _accepted(m, text, context=True)), None)


def _settled(after: str) -> bool:
    """True when the text after a letter already decides that it is the answer."""
    return re.match(r"[ \t]*(?:\n|[^\w\s]|\w+\W)", after) is not None


class OBQATask(FileTask):
    """OpenBookQA from `<task.path>/{train,test}.jsonl`; ids 'obqa-train-<line>' / 'obqa-test-<line>'."""

    name = "obqa"
    answer_type = "choice"
    choices = LETTERS
    id_prefix = "obqa"

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        self.cloze = config.option_style == "cloze"

    def prompt(self, question: str) -> str:
        return self._options(question)[0] if self.cloze else question

    def target(self, answer: str) -> str:
        if self.cloze:
            raise ValueError("cloze-style OBQA trains on the gold option's text, which depends on the question;"
                             " call target_for(example, answer)")
        return self.gold_answer(answer)

    def target_for(self, example: Example, answer: str) -> str:
        if not self.cloze:
            return self.target(answer)
        return self._options(example.question)[1][LETTERS.index(self.gold_answer(answer))]

    def choice_texts(self) -> list[str] | None:
        return None if self.cloze else super().choice_texts()

    def choice_texts_for(self, example: Example) -> list[str] | None:
        return list(self._options(example.question)[1]) if self.cloze else self.choice_texts()

    def _options(self, question: str) -> tuple[str, tuple[str, ...]]:
        """(stem, option texts) of a question; rows that cannot be split are refused at load."""
        parts = split_options(question)
        if parts is None:
            raise ValueError(f"OBQA question without four 'AnswerA: ...' to 'AnswerD: ...' lines: {question!r:.80}")
        return parts

    def _example(self, rows: Rows, number: int, record: dict[str, Any]) -> Example:
        example = super()._example(rows, number, record)
        if self.cloze and split_options(example.question) is None:
            raise DataError(f"{rows.at(number)}: task.option_style=cloze needs the question stem followed by one line"
                            " per option, 'AnswerA: ...' to 'AnswerD: ...'; this question has not got them",
                            hint="fix the question, or set task.option_style=letter to list the options as they are")
        return example

    def extract(self, text: str) -> str | None:
        m = _match(text)
        return None if m is None else m.group(_group(m)).upper()

    def gold_answer(self, answer: str) -> str:
        m = _LABEL.fullmatch(answer)
        if m is not None:
            return m.group(1).upper()
        extracted = self.extract(answer)
        return extracted if extracted is not None else answer.strip().upper()

    def answer_span(self, text: str) -> tuple[int, int] | None:
        m = _match(text)
        return None if m is None else m.span(_group(m))

    def answer_complete(self, text: str) -> bool:
        if self.cloze:  # the answer is an option's text: it ends at EOS
            return False
        m = _strong_match(text)
        return m is not None and _settled(text[m.end("letter"):])

    def check_label(self, answer: str) -> str | None:
        if _LABEL.fullmatch(answer) is None:
            return "expected one letter: A, B, C or D"
        return None

    def label_hint(self) -> str:
        return "write the answer as one letter, A, B, C or D"
