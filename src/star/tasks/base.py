"""What a task is: examples with stable ids, a prompt, a training target and answer checking."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerType = Literal["number", "choice", "text"]
Split = Literal["pool", "test"]


@dataclass(frozen=True)
class Example:
    """One task input. `answer` is the gold label; for pool examples only the oracle reads it."""

    id: str
    question: str
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """A task family: how to load its splits, prompt the model, build targets and grade answers.

    Subclasses set `name` and `answer_type` (and `choices` for closed-answer tasks) and
    implement `load`, `target`, `extract` and `gold_answer`.
    """

    name: str = "task"
    answer_type: AnswerType = "text"
    #: The closed set of canonical answers (e.g. ("true", "false") or ("A", "B", "C", "D")).
    choices: tuple[str, ...] | None = None
    #: The system message put before every prompt (`task.system_prompt`; star.engine.batching), if any.
    system_prompt: str | None = None

    @abstractmethod
    def load(self, split: Split) -> list[Example]:
        """Return the examples of one split, with gold answers, in a deterministic order."""

    def prompt(self, question: str) -> str:
        """The user message shown to the model for a question."""
        return question

    @abstractmethod
    def target(self, answer: str) -> str:
        """The assistant text the model is trained to produce for a label `answer`."""

    def target_for(self, example: Example, answer: str) -> str:
        """The training target of label `answer` for `example`: `target(answer)` unless the target depends on the
        example (cloze-style OBQA trains on the gold option's text)."""
        return self.target(answer)

    @abstractmethod
    def extract(self, text: str) -> str | None:
        """The canonical final answer in a model output, or None if there is none."""

    @abstractmethod
    def gold_answer(self, answer: str) -> str:
        """The canonical final answer of a label (e.g. the number after '####')."""

    def is_correct(self, prediction: str | None, answer: str) -> bool:
        """Exact match of the extracted prediction against the label's canonical answer."""
        return prediction is not None and prediction == self.gold_answer(answer)

    def answer_span(self, text: str) -> tuple[int, int] | None:
        """Character span of the extracted answer in `text` (for confidence), or None."""
        pred = self.extract(text)
        if pred is None:
            return None
        start = text.rfind(pred)
        return None if start < 0 else (start, start + len(pred))

    def answer_complete(self, text: str) -> bool:
        """True once a generated `text` holds a finished final answer, so decoding can stop."""
        return False

    def check_label(self, answer: str) -> str | None:
        """None if `answer` is a valid label for this task, else a message saying why not."""
        if not answer.strip():
            return "the answer is empty"
        return None

    def choice_texts(self) -> list[str] | None:
        """Continuations whose probabilities make the label-free closed-set score, if any."""
        if self.choices is None:
            return None
        return [self.target(c) for c in self.choices]

    def choice_texts_for(self, example: Example) -> list[str] | None:
        """The continuations scored for `example`, one per entry of `choices`, in that order: `choice_texts()`
        unless each example has its own option texts (cloze-style OBQA)."""
        return self.choice_texts()
