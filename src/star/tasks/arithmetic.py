"""The built-in task: seeded arithmetic word problems of 1-4 steps in GSM8K's answer format.

Difficulty is graded (more steps, larger numbers, multiplication and division later), so
uncertainty has something to find. Needs no files and no network.
"""

from __future__ import annotations

import random

from star.tasks.base import Example, Split, Task
from star.tasks.numeric import NumberAnswers

INSTRUCTION = "Answer the above question. First think step by step and then answer the final number."
_NAMES = ["Ava", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jon", "Kemi", "Liam"]
_ITEMS = ["apples", "marbles", "stickers", "books", "coins", "pencils", "shells", "cards", "eggs", "stamps"]
# Split streams never overlap: pool and test examples come from different seeds.
_SPLIT_SALT = {"pool": 1, "test": 2}


def _step(rng: random.Random, value: int, level: int, item: str) -> tuple[str, str, int]:
    """One operation on `value`: (sentence, worked line, new value)."""
    ops = ["add", "sub"] + (["mul"] if level >= 2 else []) + (["div"] if level >= 3 else [])
    op = rng.choice(ops)
    if op == "mul":
        k = rng.randint(2, 3 + level)
        return f"Then the amount is multiplied by {k}.", f"{value} * {k} = {value * k}.", value * k
    if op == "div" and value >= 4:
        divisors = [d for d in range(2, 6) if value % d == 0]
        if divisors:
            d = rng.choice(divisors)
            return f"Then they split them equally into {d} groups and keep one group.", f"{value} / {d} = {value // d}.", value // d
    if op == "sub" and value > 2:
        k = rng.randint(1, value - 1)
        return f"Then {k} {item} are given away.", f"{value} - {k} = {value - k}.", value - k
    k = rng.randint(1, 5 * level + 5)
    return f"Then {k} more {item} are bought.", f"{value} + {k} = {value + k}.", value + k


def make_problem(rng: random.Random, steps: int) -> tuple[str, str]:
    """A question with `steps` operations and its worked answer ending '#### N'."""
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    value = rng.randint(2, 10 * steps + 5)
    sentences, lines = [f"{name} has {value} {item}."], []
    for _ in range(steps):
        sentence, line, value = _step(rng, value, steps, item)
        sentences.append(sentence)
        lines.append(line)
    sentences.append(f"How many {item} does {name} have now?")
    return " ".join(sentences), " ".join(lines) + f"\n#### {value}"


class ArithmeticTask(NumberAnswers, Task):
    """Seeded 1-4 step arithmetic word problems; `max_steps` bounds the difficulty."""

    name = "arithmetic"
    answer_type = "number"

    def __init__(self, pool_size: int, test_size: int, seed: int = 0, max_steps: int = 4) -> None:
        self.sizes = {"pool": pool_size, "test": test_size}
        self.seed = seed
        self.max_steps = max_steps

    def load(self, split: Split) -> list[Example]:
        rng = random.Random(self.seed * 1000 + _SPLIT_SALT[split])
        examples = []
        for i in range(self.sizes[split]):
            steps = rng.randint(1, self.max_steps)
            question, answer = make_problem(rng, steps)
            examples.append(Example(f"{split}-{i:06d}", question, answer, {"steps": steps}))
        return examples

    def prompt(self, question: str) -> str:
        return f"{question}\n{INSTRUCTION}"
