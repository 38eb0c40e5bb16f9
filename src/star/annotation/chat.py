"""What the LLM annotator talks to: a chat backend that answers conversations, and its failures.

Two backends implement `ChatBackend`: `OpenAIChat` (star.annotation.openai_chat, any OpenAI-compatible
chat-completions endpoint) and the local Hugging Face model of star.engine.chat, which the loop hands
in, so that annotation never imports the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from star.errors import StarError

#: One chat message in the OpenAI format: {"role": "system" | "user" | "assistant", "content": text}.
Message = dict[str, str]


class Completion(Protocol):
    """A backend's answer to one conversation: the reply text and the tokens it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Reply:
    """A `Completion` (the HTTP backend's and the tests')."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatBackend(Protocol):
    """Answers conversations, `batch_size` at a time (the annotator commits each batch's labels before the next)."""

    batch_size: int

    def complete(self, conversations: Sequence[Sequence[Message]]) -> Sequence[Completion]:
        """One completion per conversation, in order; a failure that retries cannot mend raises a StarError."""
        ...


class AnnotatorUnavailable(StarError):
    """The annotator's endpoint kept failing (timeouts, refused connections, 429, 5xx) after every retry."""
