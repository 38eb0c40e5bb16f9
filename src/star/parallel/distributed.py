"""Multi-process runs on Hugging Face accelerate: who am I, shard work, gather results.

`accelerate launch --multi_gpu --num_processes N -m star run ...` (or a DDP / FSDP
accelerate config) starts N copies of the run. Pool scoring, generation and
evaluation are sharded across them by whole batches (so every batch, and its result, is the
same as in one process); the results are gathered on every process, each computes the same
selection, and only the main process writes the run directory and the label store. `init` returns
this process's `Dist`; the loop hands it to every engine function that shares out work.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import torch
from tqdm.auto import tqdm

from star.parallel.fsdp import FsdpSettings, fsdp_settings
from star.parallel.memory import TrimGuard
from star.parallel.zero3 import DeepSpeedSettings, deepspeed_settings

T = TypeVar("T")
R = TypeVar("R")


def free_port() -> int:
    """A TCP port on this machine that nothing listens on now (for a process group's rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def share_cores(env: dict[str, str], processes: int, cores: int | None = None) -> dict[str, str]:
    """Set OMP_NUM_THREADS in `env` to each process's share of the cores, unless the user set it."""
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores instead of oversubscribing them N times
        env["OMP_NUM_THREADS"] = str(max(1, (cores or os.cpu_count() or 1) // processes))
    return env


def relaunch(num_processes: int, star_args: Sequence[str], fsdp: bool = False) -> int:
    """Run `star <star_args>` in `num_processes` processes through `accelerate launch`; its exit code.

    A convenience for one machine: the same as typing
    `accelerate launch --multi_gpu --num_processes N -m star ...` (gloo on CPU, NCCL on GPUs),
    or with `fsdp`, `accelerate launch --use_fsdp --fsdp_version 2 ...` (FULL_SHARD, parallel/fsdp.py).
    """
    port = free_port()  # for the process group's rendezvous
    env = share_cores(dict(os.environ), num_processes)
    engine = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_reshard_after_forward", "true"] if fsdp else ["--multi_gpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *engine, "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "star", *star_args]
    return run_forwarding_signals(cmd, env)


def run_forwarding_signals(cmd: Sequence[str], env: dict[str, str]) -> int:
    """Run `cmd` (a launcher) to its end and return its exit code; SIGTERM / SIGINT sent to this process go to it.

    The launcher runs in a session of its own, so a terminal's Ctrl+C reaches it once, through
    here, not twice; it stops its workers and exits, and so does this process, with its code.
    On Linux it also gets SIGTERM if this process dies (even by SIGKILL): no orphaned workers.
    """
    import signal
    import subprocess
    import threading

    child = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_terminate_with_parent)
    if threading.current_thread() is not threading.main_thread():  # no signal handlers there
        return child.wait()
    forward = {s: signal.signal(s, lambda signum, frame: child.send_signal(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return child.wait()
    finally:
        for s, handler in forward.items():
            signal.signal(s, handler)


def _terminate_with_parent() -> None:
    """In the launched child, before exec: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG), else nothing."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def launched_world_size() -> int:
    """Processes started by a launcher (accelerate launch / torchrun), from the environment."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size and device."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None
    fsdp: FsdpSettings | None = None  # set when FSDP shards the model's parameters across the processes
    deepspeed: DeepSpeedSettings | None = None  # set when DeepSpeed ZeRO-3 partitions them

    @property
    def sharded(self) -> bool:
        """FSDP or ZeRO-3: every process must run every forward together (each layer gathers its weights)."""
        return self.fsdp is not None or self.deepspeed is not None

    @property
    def engine(self) -> str:
        """How the processes share the model: 'DDP', 'FSDP' or 'DeepSpeed ZeRO-3'."""
        return "FSDP" if self.fsdp is not None else "DeepSpeed ZeRO-3" if self.deepspeed is not None else "DDP"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share: every world-th item, starting at its rank."""
        return list(items[self.rank :: self.world])

    def lockstep_share(self, items: Sequence[T]) -> tuple[list[T], int]:
        """This process's share for forwards run in lockstep, and how many of it are real.

        With sharded parameters each layer all-gathers its weights in every forward, so every
        process must run as many forwards as the others: a short share is topped up with
        repeats of an item, whose results the caller drops (the first `real` are its own).
        """
        mine = self.shard(items)
        if not self.sharded or not items:
            return mine, len(mine)
        per_process = -(-len(items) // self.world)
        return mine + [items[0]] * (per_process - len(mine)), len(mine)

    def map_batches(self, batches: Sequence[list[int]], run: Callable[[list[int]], Sequence[R]], desc: str = "",
                    show_progress: bool = False) -> list[R]:
        """`run` over batches of item indices, shared out across the processes; every item's result, on every process.

        `run(batch)` returns one result per index of `batch`. This process runs its share of the
        batches (`lockstep_share`; stand-ins' results are dropped), the shares are gathered, and the
        results come back in the order of the items' indices. The progress bar shows on the main process.
        """
        mine, real = self.lockstep_share(batches)
        bar = tqdm(mine, desc=desc, unit="batch", disable=not show_progress or not self.is_main, leave=False)
        guard = TrimGuard()  # freed heap back to the OS only past a bound (memory.py), not after every batch
        done = [(batch, _guarded(run(batch), guard)) for batch in bar][:real]  # the rest kept shards in step
        by_index = {i: result for batch, results in self.gather(done) for i, result in zip(batch, results)}
        return [by_index[i] for i in sorted(by_index)]

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


def check_engine() -> tuple[FsdpSettings | None, DeepSpeedSettings | None]:
    """The launch's FSDP or DeepSpeed settings (None, None for DDP or one process).

    Refuses Megatron-LM, and settings star cannot honour, before the model loads. DDP, FSDP
    (through torch's FSDP2, parallel/fsdp.py) and DeepSpeed ZeRO-3 (parallel/zero3.py) are supported.
    """
    from star.errors import ConfigError

    if os.environ.get("ACCELERATE_USE_MEGATRON_LM", "").lower() in ("1", "true", "yes"):
        raise ConfigError("this run was launched with Megatron-LM (accelerate set ACCELERATE_USE_MEGATRON_LM); "
                          "star does not run on Megatron-LM",
                          hint="for parameter sharding launch with the FSDP config (examples/accelerate/fsdp.yaml) or "
                               "DeepSpeed ZeRO-3 (examples/accelerate/deepspeed_zero3.yaml); for data parallelism the "
                               "DDP config (examples/accelerate/ddp.yaml)")
    return fsdp_settings(), deepspeed_settings()  # each raises on settings star cannot honour


def init(device_kind: str = "auto") -> Dist:
    """Join the launched process group (gloo on CPU, nccl on CUDA); this process's place, to be handed on."""
    fsdp, deepspeed = check_engine()
    if launched_world_size() <= 1:
        return Dist()
    from accelerate import PartialState

    cpu = device_kind == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    atexit.register(leave_process_group)
    device = torch.device("cpu") if cpu else state.device
    return Dist(state.process_index, state.num_processes, device, fsdp, deepspeed)


def leave_process_group() -> None:
    """Destroy the process group before the interpreter tears down (the Python side of it; see `exit_process`)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """Exit with `code`. A launched worker (of several) leaves the process group, flushes, and
    skips interpreter teardown (`os._exit`).

    Why: a finished 2-process run rarely (1 in 10-50 launches) aborted at teardown with
    "terminate called without an active exception". The cause, found with a core dump of a
    minimal gloo program (docs/reliability.md): a gloo worker thread
    (`ProcessGroupGloo::runLoop`) drops its reference to a finished collective's work object
    after the main thread has moved on. The work holds tensors made in Python, so its
    destructor decrefs their Python objects and takes the GIL. During interpreter
    finalization, CPython up to 3.13 ends such a thread with `pthread_exit`. The forced unwind
    reaches a noexcept C++ destructor, and libstdc++ calls `std::terminate`. Destroying the
    process group first does not stop it: the C++ group and its threads outlive the Python
    handle. Without finalization, no thread takes the GIL at exit. Nothing is left to write at
    this point (run files are closed, labels are committed).
    """
    if launched_world_size() <= 1:
        sys.exit(code)
    try:
        leave_process_group()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _guarded(results: R, guard: TrimGuard) -> R:
    """`results`, after `guard` returned freed memory to the OS if the phase's heap grew past its bound
    (memory.py: RSS stays bounded over many batches)."""
    guard.after_batch()
    return results
