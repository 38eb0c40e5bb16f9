"""`al.annotator=llm`: a larger LLM drafts the labels, and the task's own checks accept or refuse each one.

For each selected id without a label, the annotator sends the system prompt and the user
template (`{question}`, and `{instruction}`: the task's answer format), extracts the answer with
the task's extraction, turns it into a label of the task's form ('... #### N' for numbers, the
canonical choice for closed tasks) and checks it as `star label` checks an answer. A reply
without a valid answer is asked again with the problem explained, `answer_retries` times; then
the id goes to the fallback annotator (people, or the oracle in simulation).

Nothing is lost or paid twice: every reply is in the ledger (llm_ledger.py) before its label is
committed, one label per transaction. A resume skips labelled ids, commits answers the ledger
holds without asking, continues an id's tries where they stopped, and never re-asks an id it gave up on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from star.annotation.answers import answer_fix, answer_problem
from star.annotation.chat import AnnotatorUnavailable, ChatBackend, Message
from star.annotation.context import Annotator, RoundContext
from star.annotation.llm_ledger import GAVE_UP, REPLY, Ledger, Prices, totals
from star.config import LLMAnnotatorConfig
from star.errors import DataError
from star.tasks import Task
from star.tasks.numeric import FINAL_MARKER

log = logging.getLogger("star")

# A final-answer phrase left at the end of the reasoning once the number is cut off.
_TRAILING_MARKER = re.compile(r"[\s*_]*(?:(?:the\s+)?final\s+answer(?:\s+is)?|(?:the\s+)?answer\s+is)\s*[:=]?[\s$*_]*$",
                              re.IGNORECASE)


def answer_instruction(task: Task) -> str:
    """What the `{instruction}` placeholder says: the answer format `task`'s extraction reads."""
    if task.choices:
        return f"Choose one of: {', '.join(task.choices)}. End your reply with 'The answer is X'."
    if task.answer_type == "number":
        return f"Think step by step, then end your reply with '{FINAL_MARKER} N', N being the number."
    return "Reply with the answer only."


def reply_label(task: Task, text: str, keep_reasoning: bool = True) -> tuple[str | None, str | None]:
    """(label, None) for a reply that holds a valid answer, in the form `task`'s labels take; else (None, why not)."""
    text = text.strip()
    if not text:
        return None, "the reply is empty"
    label = text
    if task.answer_type != "text":
        found = task.extract(text)
        if found is None:
            return None, f"no answer could be read from it ({answer_fix(task)})"
        label = found
        if task.answer_type == "number":
            span = task.answer_span(text)
            reasoning = _TRAILING_MARKER.sub("", text[: span[0]]).strip() if span and keep_reasoning else ""
            label = f"{reasoning}\n#### {found}" if reasoning else f"#### {found}"
    problem = answer_problem(task, label)
    return (None, problem) if problem is not None else (label, None)


class LLMAnnotator:
    """Labels drafted by a chat model; ids it cannot answer go to `fallback`. Recorded as `llm:<model>`."""

    def __init__(self, settings: LLMAnnotatorConfig, backend: Callable[[], ChatBackend], fallback: Annotator,
                 gold: Callable[[Sequence[str]], list[str | None]] | None = None) -> None:
        self.settings, self.fallback, self._gold = settings, fallback, gold
        self._make_backend, self._backend = backend, None
        self.name = f"llm:{settings.model}"
        self.prices = Prices(settings.price_prompt_per_1k, settings.price_completion_per_1k)

    def acquire(self, ctx: RoundContext, ids: Sequence[str]) -> list[str]:
        """Label every id still without one; return those neither the LLM nor the fallback labelled."""
        ledger = Ledger(ctx.run.llm_ledger_path)
        mine = ledger.records(ctx.round_index, self.name)
        todo = self._commit_recorded(ctx, [i for i in ids if ctx.store.get(i) is None], mine)
        gave_up = {r["id"] for r in mine if r.get("event") == GAVE_UP}
        asked = {i: [r for r in mine if r.get("event") == REPLY and r.get("id") == i] for i in todo if i not in gave_up}
        unanswered = set(self._ask(ctx, ledger, asked)) | gave_up
        left = [i for i in todo if i in unanswered and ctx.store.get(i) is None]
        if not left:
            return []
        log.warning("round %d: the LLM annotator gave no valid answer for %d item(s) after %d tries each; %s labels "
                    "them", ctx.round_index, len(left), self.settings.answer_retries + 1, self.fallback.name)
        return self.fallback.acquire(ctx, left)

    def _commit_recorded(self, ctx: RoundContext, todo: list[str], mine: list[dict[str, Any]]) -> list[str]:
        """Commit answers the ledger holds (paid for before a crash, never committed); return the ids still to do."""
        recorded = {r["id"]: r["label"] for r in mine if r.get("event") == REPLY and isinstance(r.get("label"), str)}
        for example_id in todo:
            if example_id in recorded:
                self._commit(ctx, example_id, recorded[example_id])
        return [i for i in todo if i not in recorded]

    def _commit(self, ctx: RoundContext, example_id: str, label: str) -> None:
        """One label in its own transaction; an id labelled meanwhile by someone else keeps that label."""
        try:
            ctx.store.add(example_id, label, self.name, ctx.round_index)
        except DataError:
            if ctx.store.get(example_id) is None:
                raise
            log.info("%s was labelled by another annotator meanwhile; its LLM answer stays in the ledger", example_id)

    def backend(self) -> ChatBackend:
        """The chat backend, made on first use (a local model loads only when there is something to ask)."""
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def _conversation(self, ctx: RoundContext, example_id: str, earlier: list[dict[str, Any]]) -> list[Message]:
        """The messages for an id's next try: the prompt, then each earlier invalid reply and what was wrong."""
        s = self.settings
        user = s.prompt.format(question=ctx.questions[example_id], instruction=answer_instruction(ctx.task))
        messages = ([{"role": "system", "content": s.system_prompt}] if s.system_prompt else []) + \
            [{"role": "user", "content": user}]
        for record in earlier:
            messages += [{"role": "assistant", "content": str(record.get("reply", ""))},
                         {"role": "user", "content": f"That reply has no valid answer: {record.get('problem')}. "
                                                     f"{answer_instruction(ctx.task)}"}]
        return messages

    def _ask(self, ctx: RoundContext, ledger: Ledger, asked: dict[str, list[dict[str, Any]]]) -> list[str]:
        """Ask for every id in `asked` (its earlier replies), batch by batch; return the ids given up on."""
        tries = self.settings.answer_retries + 1
        given_up = [i for i, earlier in asked.items() if len(earlier) >= tries]
        for example_id in given_up:  # its last try was made before a crash: record the end, ask nothing
            ledger.append({"event": GAVE_UP, "round": ctx.round_index, "id": example_id, "annotator": self.name})
        pending = [i for i in asked if i not in given_up]
        if not pending:
            return given_up
        backend = self.backend()
        history = {i: list(asked[i]) for i in pending}
        for start in range(0, len(pending), max(1, backend.batch_size)):
            active = pending[start:start + max(1, backend.batch_size)]
            while active:
                replies = backend.complete([self._conversation(ctx, i, history[i]) for i in active])
                if len(replies) != len(active):
                    raise AnnotatorUnavailable(f"the LLM annotator's backend answered {len(replies)} of "
                                               f"{len(active)} conversations", hint="check the backend")
                active = [i for i, reply in zip(active, replies) if not self._take(ctx, ledger, i, reply, history)]
                done = [i for i in active if len(history[i]) >= tries]
                for example_id in done:
                    ledger.append({"event": GAVE_UP, "round": ctx.round_index, "id": example_id,
                                   "annotator": self.name, "problem": history[example_id][-1].get("problem")})
                given_up += done
                active = [i for i in active if i not in done]
        return given_up

    def _take(self, ctx: RoundContext, ledger: Ledger, example_id: str, reply: Any,
              history: dict[str, list[dict[str, Any]]]) -> bool:
        """Record one reply in the ledger, then commit its label; False when it held no valid answer."""
        label, problem = reply_label(ctx.task, reply.text, self.settings.keep_reasoning)
        record = {"event": REPLY, "round": ctx.round_index, "id": example_id, "annotator": self.name,
                  "attempt": len(history[example_id]) + 1, "prompt_tokens": reply.prompt_tokens,
                  "completion_tokens": reply.completion_tokens,
                  "cost": self.prices.cost(reply.prompt_tokens, reply.completion_tokens),
                  "reply": reply.text, "label": label, "problem": problem}
        ledger.append(record)  # paid for: on disk before anything else
        history[example_id].append(record)
        if label is not None:
            self._commit(ctx, example_id, label)
        return label is not None

    def round_metrics(self, ctx: RoundContext) -> dict[str, Any]:
        """Round t's LLM figures: labels, requests, tokens, cost, and agreement with the gold labels (simulation)."""
        mine = Ledger(ctx.run.llm_ledger_path).records(ctx.round_index, self.name)
        labels = [lab for lab in ctx.store.in_round(ctx.round_index) if lab.annotator == self.name]
        agreement, compared = None, 0
        if self._gold is not None and labels:
            pairs = [(lab.answer, g) for lab, g in zip(labels, self._gold([lab.example_id for lab in labels]))
                     if g is not None]
            compared = len(pairs)
            if pairs:
                task = ctx.task
                agreement = sum(task.is_correct(task.gold_answer(a), g) for a, g in pairs) / len(pairs)
        unanswered = {r["id"] for r in mine if r.get("event") == GAVE_UP}
        return {"llm_annotator": self.name, "llm_labels": len(labels), "llm_agreement": agreement,
                "llm_compared": compared, "llm_unanswered": len(unanswered), **totals(mine)}
