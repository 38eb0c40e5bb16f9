"""Multi-process runs on Hugging Face accelerate: who am I, shard work, gather results.

`accelerate launch --multi_gpu --num_processes N -m star run ...` (or a DDP / FSDP /
DeepSpeed accelerate config) starts N copies of the run. Pool scoring, generation and
evaluation are sharded across them by whole batches (so every batch, and its result, is the
same as in one process); the results are gathered on every process, each computes the same
selection, and only the main process writes the run directory and the label store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def launched_world_size() -> int:
    """Processes started by a launcher (accelerate launch / torchrun), from the environment."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size and device."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share: every world-th item, starting at its rank."""
        return list(items[self.rank :: self.world])

    def gather(self, items: list[Any]) -> list[Any]:
        """Concatenate every process's list, on every process (rank order)."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def sum(self, value: float) -> float:
        """The sum of `value` over all processes (itself in one process)."""
        if self.world == 1:
            return value
        return float(sum(self.gather([value])))

    def barrier(self) -> None:
        """Wait until every process arrives (no-op in one process)."""
        if self.world > 1:
            torch.distributed.barrier()


_CURRENT = Dist()


def init(device_kind: str = "auto") -> Dist:
    """Join the launched process group (gloo on CPU, nccl on CUDA) and remember this process's place."""
    global _CURRENT
    if launched_world_size() <= 1:
        _CURRENT = Dist()
        return _CURRENT
    from accelerate import PartialState

    cpu = device_kind == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    device = torch.device("cpu") if cpu else state.device
    _CURRENT = Dist(state.process_index, state.num_processes, device)
    return _CURRENT


def current() -> Dist:
    """The Dist set by `init` (a single process until then)."""
    return _CURRENT
