"""The LLM annotator's ledger: one JSON line per request (tokens, cost, reply, label or problem), append-only.

DIR/llm_annotations.jsonl holds every reply the run paid for, written (and fsynced) before its
label is committed: the audit trail of tokens and cost, and what lets a resume commit an answer
already paid for instead of asking again. A line torn by a kill is dropped on reading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from star.errors import RunStateError
from star.store.io import append_jsonl, read_appended_jsonl

#: The `event` of a ledger line: one request and its reply, or the end of the tries for an id.
REPLY, GAVE_UP = "reply", "gave_up"


@dataclass(frozen=True)
class Prices:
    """Price per 1,000 prompt and completion tokens (any currency); both None: no cost is computed."""

    prompt_per_1k: float | None = None
    completion_per_1k: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """The price of one request, or None when no price is configured (a missing one counts 0)."""
        if self.prompt_per_1k is None and self.completion_per_1k is None:
            return None
        return (prompt_tokens * (self.prompt_per_1k or 0.0) + completion_tokens * (self.completion_per_1k or 0.0)) / 1000


class Ledger:
    """The append-only JSON-lines file of one run's LLM requests."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, record: dict[str, Any]) -> None:
        """Add one line (with the time), fsynced before returning."""
        append_jsonl(self.path, [{**record, "time": time.time()}])

    def records(self, round_index: int, annotator: str) -> list[dict[str, Any]]:
        """The lines of one round and annotator, in the order written."""
        if not self.path.is_file():
            return []
        try:
            rows = read_appended_jsonl(self.path)
        except (ValueError, UnicodeDecodeError) as e:
            raise RunStateError(f"the LLM annotator's ledger {self.path} is damaged: {e}",
                                hint="restore it, or move it away: labels already committed are kept, and the "
                                     "ids still without one are asked again") from None
        return [r for r in rows if isinstance(r, dict) and r.get("round") == round_index
                and r.get("annotator") == annotator]


def totals(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, tokens, cost (None when unpriced) and invalid replies of ledger lines."""
    replies = [r for r in records if r.get("event") == REPLY]
    costs = [r["cost"] for r in replies if isinstance(r.get("cost"), (int, float))]
    return {
        "llm_requests": len(replies),
        "llm_invalid": sum(1 for r in replies if r.get("label") is None),
        "llm_prompt_tokens": sum(int(r.get("prompt_tokens") or 0) for r in replies),
        "llm_completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in replies),
        "llm_cost": round(sum(costs), 10) if costs else None,
    }
