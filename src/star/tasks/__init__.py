"""Task families by name. `build_task(config.task)` makes the task a run uses."""

from __future__ import annotations

from collections.abc import Callable

from star.config import TaskConfig
from star.errors import ConfigError
from star.tasks.arithmetic import ArithmeticTask
from star.tasks.base import AnswerType, Example, Task
from star.tasks.boolq import BoolQTask
from star.tasks.gsm8k import GSM8KTask
from star.tasks.jsonl import make_jsonl_task
from star.tasks.obqa import OBQATask

TaskFactory = Callable[[TaskConfig], Task]
TASKS: dict[str, TaskFactory] = {
    "arithmetic": lambda c: ArithmeticTask(c.pool_size, c.test_size, seed=c.seed, max_steps=c.max_steps),
    "gsm8k": GSM8KTask,
    "boolq": BoolQTask,
    "obqa": OBQATask,
    "jsonl": make_jsonl_task,
}


def build_task(config: TaskConfig) -> Task:
    """The task named by `config.name`, configured (with `task.system_prompt`, if set)."""
    try:
        factory = TASKS[config.name]
    except KeyError:
        raise ConfigError(f"task.name={config.name!r} is not a known task", hint=f"choose one of {sorted(TASKS)}") from None
    unread = [f"task.{k}" for k in ("hub", "prompt_template") if config.name == "arithmetic" and getattr(config, k)]
    if unread:
        raise ConfigError(f"{' and '.join(unread)} need a task that reads data; task.name='arithmetic' makes its own",
                          hint="set task.name to jsonl (or gsm8k, boolq, obqa) with task.path or task.hub")
    task = factory(config)
    task.system_prompt = config.system_prompt or None
    return task


__all__ = ["TASKS", "AnswerType", "Example", "Task", "build_task"]
