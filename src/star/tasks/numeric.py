"""Numeric answers in GSM8K's form: "... #### N" labels, "The final answer is N" outputs."""

from __future__ import annotations

import re

FINAL_MARKER = "The final answer is"
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_MARKER = re.compile(re.escape(FINAL_MARKER), re.IGNORECASE)
_COMPLETE = re.compile(re.escape(FINAL_MARKER) + r"\s*\$?\s*-?\d[\d,]*(?:\.\d+)?(?=[^\d.,]|[.,]\D)", re.IGNORECASE)


def canonical_number(text: str) -> str | None:
    """'1,234.50' -> '1234.5', '7.0' -> '7'; None if `text` is not a number."""
    cleaned = text.replace(",", "").strip().rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _numbers(text: str) -> list[re.Match[str]]:
    return [m for m in _NUMBER.finditer(text) if canonical_number(m.group()) is not None]


def extract_number_span(text: str) -> tuple[int, int] | None:
    """Span of the first number after 'The final answer is', else of the last number."""
    marker = None
    for marker in _MARKER.finditer(text):
        break
    if marker is not None:
        after = _numbers(text[marker.end():])
        if after:
            return marker.end() + after[0].start(), marker.end() + after[0].end()
    found = _numbers(text)
    return (found[-1].start(), found[-1].end()) if found else None


def extract_number(text: str) -> str | None:
    """The canonical final number of a model output (see `extract_number_span`)."""
    span = extract_number_span(text)
    return None if span is None else canonical_number(text[span[0]:span[1]])


def gsm8k_target(answer: str) -> str:
    """A label -> training target: '#### N' becomes 'The final answer is N'; a bare number too."""
    if "####" in answer:
        body, final = answer.rsplit("####", 1)
        body = body.rstrip()
        sep = "\n" if body else ""
        return f"{body}{sep}{FINAL_MARKER} {final.strip()}"
    if canonical_number(answer) is not None:
        return f"{FINAL_MARKER} {answer.strip()}"
    return answer.strip()


def gsm8k_gold(answer: str) -> str:
    """The canonical number of a label: after the last '####', else its final number."""
    if "####" in answer:
        tail = answer.rsplit("####", 1)[1]
        number = canonical_number(tail)
        if number is not None:
            return number
    extracted = extract_number(answer)
    return extracted if extracted is not None else answer.strip()


def number_answer_complete(text: str) -> bool:
    """True once the output holds 'The final answer is N' followed by a non-digit."""
    return _COMPLETE.search(text) is not None


def check_number_label(answer: str) -> str | None:
    """None if the label carries a final number, else why not."""
    if not answer.strip():
        return "the answer is empty"
    if "####" in answer and canonical_number(answer.rsplit("####", 1)[1]) is None:
        return "the text after '####' is not a number"
    if "####" not in answer and extract_number(answer) is None:
        return "the answer holds no number (expected e.g. '42' or '... #### 42')"
    return None


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
