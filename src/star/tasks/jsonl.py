"""Your own data (JSON lines, or any source star.tasks.sources reads): `task.question_field` (or
`task.prompt_template`) and `task.answer_field`, graded by `task.answer_type`.

- number: GSM8K rules (labels '... #### N' or 'N'; targets end 'The final answer is N').
- choice: the target is the canonical choice; extraction finds a choice as a whole word,
  case-insensitively, the longest one where several overlap, preferring the text after the
  last 'answer is' / 'answer:', else the first in the output.
- text: exact match after strip, whitespace collapse and casefold.
Every label is checked against the type at load (DataError with file and line).
"""

from __future__ import annotations

import re

from star.config import TaskConfig
from star.errors import ConfigError
from star.tasks.files import FileTask
from star.tasks.gsm8k import NumberAnswers

_MARKER = re.compile(r"answer\s*(?:is\b|[:=])", re.IGNORECASE)


def normalize_text(text: str) -> str:
    """Strip, collapse whitespace runs to one space, casefold: the text-answer comparison key."""
    return " ".join(text.split()).casefold()


class JsonlTask(FileTask):
    """Common part of the generic tasks: fields from the config (FileTask), ids 'jsonl-<file>-<line>'."""

    name = "jsonl"
    id_prefix = "jsonl"

    def label_hint(self) -> str:
        return f"fix field {self.answer_field!r} on that line, or check task.answer_field / task.answer_type"


class JsonlNumberTask(NumberAnswers, JsonlTask):
    """Numeric answers graded as GSM8K."""

    answer_type = "number"


class JsonlTextTask(JsonlTask):
    """Free-text answers graded by normalized exact match."""

    answer_type = "text"

    def target(self, answer: str) -> str:
        return answer.strip()

    def extract(self, text: str) -> str | None:
        return normalize_text(text) or None

    def gold_answer(self, answer: str) -> str:
        return normalize_text(answer)

    def answer_span(self, text: str) -> tuple[int, int] | None:
        stripped = text.strip()
        if not stripped:
            return None
        start = text.index(stripped)
        return start, start + len(stripped)


def _check_choices(choices: list[str] | None) -> tuple[str, ...]:
    """The configured choices, or a ConfigError when they are missing, blank or duplicated."""
    if not choices:
        raise ConfigError(
            "task.answer_type='choice' needs task.choices", hint="list the allowed answers, e.g. task.choices=[yes,no]"
        )
    keys = [normalize_text(str(c)) for c in choices]
    if any(not k for k in keys):
        raise ConfigError(f"task.choices={choices!r} holds an empty choice", hint="remove it")
    if len(set(keys)) != len(keys):
        raise ConfigError(f"task.choices={choices!r} repeats a choice (compared case-insensitively)", hint="list each once")
    return tuple(" ".join(str(c).split()) for c in choices)


class JsonlChoiceTask(JsonlTask):
    """Closed-set answers: one of `task.choices`."""

    answer_type = "choice"

    def __init__(self, config: TaskConfig) -> None:
        super().__init__(config)
        self.choices = _check_choices(config.choices)
        self._canonical = {normalize_text(c): c for c in self.choices}
        alternatives = "|".join(
            r"\s+".join(re.escape(w) for w in c.split()) for c in sorted(self.choices, key=len, reverse=True)
        )
        self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def _match(self, text: str) -> re.Match[str] | None:
        """After the last answer marker if a choice is there, else the first choice in the text."""
        markers = list(_MARKER.finditer(text))
        if markers:
            m = self._pattern.search(text, markers[-1].end())
            if m is not None:
                return m
        return self._pattern.search(text)

    def target(self, answer: str) -> str:
        return self.gold_answer(answer)

    def extract(self, text: str) -> str | None:
        m = self._match(text)
        return None if m is None else self._canonical[normalize_text(m.group())]

    def gold_answer(self, answer: str) -> str:
        return self._canonical.get(normalize_text(answer), answer.strip())

    def answer_span(self, text: str) -> tuple[int, int] | None:
        m = self._match(text)
        return None if m is None else m.span()

    def answer_complete(self, text: str) -> bool:
        m = self._pattern.match(text, len(text) - len(text.lstrip()))
        return m is not None and re.match(r"[ \t]*(?:\n|[^\w\s])", text[m.end():]) is not None

    def check_label(self, answer: str) -> str | None:
        if normalize_text(answer) not in self._canonical:
            return f"it is not one of task.choices {list(self.choices)}"
        return None


def make_jsonl_task(config: TaskConfig) -> JsonlTask:
    """The generic task for `config.answer_type`."""
    kinds: dict[str, type[JsonlTask]] = {"number": JsonlNumberTask, "choice": JsonlChoiceTask, "text": JsonlTextTask}
    return kinds[config.answer_type](config)
