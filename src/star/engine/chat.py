"""A local Hugging Face model answering chat conversations: the `local` backend of the LLM annotator.

The loop hands `LocalChat` to star.annotation (which never imports the model). The model loads on
the first request, with the run's device, dtype and threads, and answers greedily, batch by batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from star.config import LLMAnnotatorConfig, ModelConfig
from star.engine.generation import generate
from star.engine.modeling import check_model_name, load_base
from star.errors import ConfigError

#: The frame of a conversation for a tokenizer without a chat template.
_PLAIN_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass(frozen=True)
class ChatReply:
    """One reply and its token counts (a star.annotation.chat.Completion)."""

    text: str
    prompt_tokens: int
    completion_tokens: int


def chat_text(tokenizer, messages: Sequence[dict[str, str]]) -> str:
    """The prompt string for a conversation: the chat template with the assistant's turn opened."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=False)
    turns = [f"{_PLAIN_ROLES.get(m['role'], m['role'])}: {m['content']}" for m in messages]
    return "\n".join(turns) + "\nAssistant: "


class LocalChat:
    """Greedy chat completions from a local model or the embedded default (`llm_annotator.model`)."""

    def __init__(self, settings: LLMAnnotatorConfig, run_model: ModelConfig) -> None:
        problem = check_model_name(settings.model)
        if problem is not None:
            raise ConfigError(problem.replace("model.name", "llm_annotator.model"))
        self.batch_size = settings.batch_size
        self.max_new_tokens = settings.max_new_tokens
        self.model_config = ModelConfig(name=settings.model, device=run_model.device, dtype=run_model.dtype,
                                        threads=run_model.threads)
        self._model: nn.Module | None = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is None:
            self._model, self._tokenizer, _, _ = load_base(self.model_config)

    def complete(self, conversations: Sequence[Sequence[dict[str, str]]]) -> list[ChatReply]:
        """One greedy reply per conversation, in order."""
        if not conversations:
            return []
        self._load()
        tok = self._tokenizer
        texts = [chat_text(tok, c) for c in conversations]
        prompts = [list(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
        gens = generate(self._model, tok, prompts, self.max_new_tokens, self.batch_size,
                        desc="generate (LLM annotator)", show_progress=False)
        return [ChatReply(g.text.strip(), len(p), len(g.token_ids)) for g, p in zip(gens, prompts)]  # EOS counted
