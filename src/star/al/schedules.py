"""lambda(t) schedules of dynamic uncertainty: the weight of the base model's score.

t is the index of the model just trained (0 for the model trained on L0) and T the horizon.
The release's linear schedule is lambda(t) = 1 - (t + 1) / T: 0.9, 0.8, ..., 0.1 for T = 10.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = Callable[[int, int, float], float]


def linear(t: int, horizon: int, value: float = 0.5) -> float:
    """1 - (t + 1) / T (the release)."""
    return max(0.0, 1.0 - (t + 1) / horizon)


def cosine(t: int, horizon: int, value: float = 0.5) -> float:
    """Half-cosine from 1 to 0 at the same points as `linear`: slower start, slower end."""
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (t + 1) / horizon)))


def exponential(t: int, horizon: int, value: float = 0.5) -> float:
    """value ** (t + 1): a fast early hand-over to the tuned model."""
    return value ** (t + 1)


def constant(t: int, horizon: int, value: float = 0.5) -> float:
    """A fixed mix, for ablations."""
    return value


SCHEDULES: dict[str, Schedule] = {"linear": linear, "cosine": cosine, "exponential": exponential, "constant": constant}


def lambda_at(name: str, t: int, horizon: int, value: float = 0.5) -> float:
    """lambda(t) of the named schedule."""
    return SCHEDULES[name](t, horizon, value)
