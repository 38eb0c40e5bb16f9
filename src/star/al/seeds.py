"""Every derived seed of a run, in one place: a run stays reproducible however it is split up.

`derive_seed` gives each (run seed, round, purpose) its own stream, so a resumed round draws
exactly what an uninterrupted one would; `row_seed` gives each example's dropout mask in each
pass its own seed, so scores do not depend on batching or on the number of processes.
"""

from __future__ import annotations

import numpy as np

#: The purposes a round draws random numbers for; each gets an independent stream.
PURPOSES = {"initial": 1, "select": 2, "subsample": 3, "init": 4, "train": 5, "mc": 6,
            "probe": 7, "labelled": 8,  # these two: `star probe`'s probe set and labelled sets
            "stop": 9}  # the stopping rules' stop set (drawn once, round 0)


def derive_seed(seed: int, round_index: int, purpose: str) -> int:
    """An independent, reproducible seed for one (run seed, round, purpose)."""
    return int(np.random.SeedSequence([seed, round_index, PURPOSES[purpose]]).generate_state(1)[0])


def row_seed(seed: int, index: int, k: int) -> int:
    """The dropout seed of example `index` in pass (or epoch) `k`."""
    return (seed * 0x9E3779B1 + index * 0x85EBCA77 + k * 0xC2B2AE3D) % (2**62)
