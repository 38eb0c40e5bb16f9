"""GSM8K: grade-school math word problems whose worked answers end '#### N'.

Extraction rule: the first number after the *last* 'The final answer is' (case-insensitive)
that has a number after it, else the last number in the text; commas are removed and
'7.0' reads as '7'. The last marker wins because a worked solution may say 'the final
answer is' mid-way (GSM8K train line 7158 does), while the target always ends with it.
"""

from __future__ import annotations

import re

from .arithmetic import INSTRUCTION
from .files import FileTask
from .numeric import (
    FINAL_MARKER,
    canonical_number,
    check_number_label,
    extract_number_span,
    gsm8k_gold,
    gsm8k_target,
    number_answer_complete,
)

_MARKER = re.compile(re.escape(FINAL_MARKER), re.IGNORECASE)


def final_number_span(text: str) -> tuple[int, int] | None:
    """Span of the first number after the last marker followed by one, else of the last number."""
    span = None
    for marker in reversed(list(_MARKER.finditer(text))):
        found = extract_number_span(text[marker.start():])
        if found is not None:
            span = marker.start() + found[0], marker.start() + found[1]
            break
    if span is None:
        span = extract_number_span(text)
    if span is None:
        return None
    start, end = span
    while end > start + 1 and text[end - 1] == ",":
        end -= 1
    return start, end


def final_number(text: str) -> str | None:
    """The canonical final number of an output (see `final_number_span`)."""
    span = final_number_span(text)
    return None if span is None else canonical_number(text[span[0]:span[1]])


class NumberAnswers:
    """Mixin: GSM8K-style targets, extraction and grading for tasks with numeric answers."""

    def target(self, answer: str) -> str:
        return gsm8k_target(answer)

    def extract(self, text: str) -> str | None:
        return final_number(text)

    def gold_answer(self, answer: str) -> str:
        return gsm8k_gold(answer)

    def answer_span(self, text: str) -> tuple[int, int] | None:
        return final_number_span(text)

    def answer_complete(self, text: str) -> bool:
        return number_answer_complete(text)

    def check_label(self, answer: str) -> str | None:
        return check_number_label(answer)


class GSM8KTask(NumberAnswers, FileTask):
    """GSM8K from `<task.path>/{train,test}.jsonl`; ids are 'gsm8k-train-<line>' / 'gsm8k-test-<line>'."""

    name = "gsm8k"
    answer_type = "number"
    id_prefix = "gsm8k"

    def prompt(self, question: str) -> str:
        return f"{question}\n{INSTRUCTION}"

    def label_hint(self) -> str:
        return "a GSM8K answer is a worked solution ending '#### N' with N a number (or just the number)"
