"""GSM8K: grade-school math word problems whose worked answers end '#### N'.

Extraction rule: the first number after the *last* 'The final answer is' (case-insensitive)
that has a number after it, else the last number in the text; commas are removed and
'7.0' reads as '7'. The last marker wins because a worked solution may say 'the final
answer is' mid-way (GSM8K train line 7158 does), while the target always ends with it.
"""

from __future__ import annotations

from star.tasks.arithmetic import INSTRUCTION
from star.tasks.files import FileTask
from star.tasks.numeric import NumberAnswers, final_number, final_number_span  # noqa: F401 - re-exported


class GSM8KTask(NumberAnswers, FileTask):
    """GSM8K from `<task.path>/{train,test}.jsonl`; ids are 'gsm8k-train-<line>' / 'gsm8k-test-<line>'."""

    name = "gsm8k"
    answer_type = "number"
    id_prefix = "gsm8k"

    def prompt(self, question: str) -> str:
        return f"{question}\n{INSTRUCTION}"

    def label_hint(self) -> str:
        return "a GSM8K answer is a worked solution ending '#### N' with N a number (or just the number)"
