"""BoolQ, closed book: yes/no questions answered 'the correct answer is true|false'.

Extraction rule (case-insensitive; the result is 'true' or 'false'), first rule that hits:
  1. the word right after the last 'answer is' / 'answer:' (as in 'the correct answer is
     True'), allowing quotes, brackets or '*' in between;
  2. the first word of the output ('False.', '**true**');
  3. the first standalone 'true' or 'false' anywhere ('untrue' does not count).
'yes' and 'no' count as 'true' and 'false' only in rules 1 and 2: as loose words they are too
common in running text ('there is no ...'). A listing of both options ('true/false',
'true or false') is never an answer. Negations ('is not true') are not interpreted.
"""

from __future__ import annotations

import re

from star.tasks.files import FileTask

MARKER = "the correct answer is"
_WORD = r"(?P<word>true|false|yes|no)(?!\w)"
_OPEN = r"[\s\"'*(\[:]*"
_AFTER_MARKER = re.compile(r"answer\s*(?:is\b|:)" + _OPEN + _WORD, re.IGNORECASE)
_AT_START = re.compile(r"^" + _OPEN + _WORD, re.IGNORECASE)
_LOOSE = re.compile(r"(?<!\w)(?P<word>true|false)(?!\w)", re.IGNORECASE)
_BOTH = re.compile(r"(?<!\w)(?:true|false|yes|no)\s*(?:/|\bor\b)\s*(?:true|false|yes|no)(?!\w)", re.IGNORECASE)
_LABEL = re.compile(r"\s*(?:the\s+correct\s+answer\s+is\s*:?\s*)?(true|false|yes|no)\s*[.!]?\s*", re.IGNORECASE)
_CANONICAL = {"true": "true", "false": "false", "yes": "true", "no": "false"}


def _masked(text: str) -> str:
    """`text` with option listings ('true/false', 'yes or no') blanked out, spans unchanged."""
    return _BOTH.sub(lambda m: " " * len(m.group()), text)


def _strong_match(text: str) -> re.Match[str] | None:
    """Rule 1 (last marker followed by a word) or rule 2 (first word), on masked text."""
    masked = _masked(text)
    hits = list(_AFTER_MARKER.finditer(masked))
    return hits[-1] if hits else _AT_START.search(masked)


def _match(text: str) -> re.Match[str] | None:
    """The match the extraction rules pick, or None."""
    return _strong_match(text) or _LOOSE.search(_masked(text))


def _settled(after: str) -> bool:
    """True when the text after an answer word shows the word ended and no 'or false' follows."""
    if re.match(r"[ \t]*(?:\n|[^\w\s/])", after):
        return True
    word = re.match(r"[ \t]*(\w+)\W", after)
    return word is not None and word.group(1).lower() != "or"


class BoolQTask(FileTask):
    """BoolQ from `<task.path>/{train,test}.jsonl`; ids 'boolq-train-<line>' / 'boolq-test-<line>'."""

    name = "boolq"
    answer_type = "choice"
    choices = ("true", "false")
    id_prefix = "boolq"

    def target(self, answer: str) -> str:
        return f"{MARKER} {self.gold_answer(answer)}"

    def extract(self, text: str) -> str | None:
        m = _match(text)
        return None if m is None else _CANONICAL[m.group("word").lower()]

    def gold_answer(self, answer: str) -> str:
        m = _LABEL.fullmatch(answer)
        if m is not None:
            return _CANONICAL[m.group(1).lower()]
        extracted = self.extract(answer)
        return extracted if extracted is not None else answer.strip().casefold()

    def answer_span(self, text: str) -> tuple[int, int] | None:
        m = _match(text)
        return None if m is None else m.span("word")

    def answer_complete(self, text: str) -> bool:
        m = _strong_match(text)
        return m is not None and _settled(text[m.end("word"):])

    def check_label(self, answer: str) -> str | None:
        if _LABEL.fullmatch(answer) is None:
            return "expected 'the correct answer is true', 'the correct answer is false', 'true' or 'false'"
        return None

    def label_hint(self) -> str:
        return "write the answer as 'the correct answer is true' or 'the correct answer is false'"
