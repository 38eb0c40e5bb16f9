"""Backward and optimizer step of a training loop, the same in one process, DDP, FSDP or DeepSpeed ZeRO-3.

It is handed the loss module and optimizer, and knows nothing of what the loss computes.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from star.parallel.distributed import Dist


class Stepper:
    """Backward and optimizer step for a loss module: plain, DDP (accelerate), or a DeepSpeed ZeRO-3 engine.

    DDP and FSDP step the optimizer themselves; ZeRO-3 steps through its engine, which
    reduces and partitions the gradients. Each round's engine is destroyed after training,
    leaving the model's own ZeRO-3 hooks (zero3.partition_model) for scoring and evaluation.
    """

    def __init__(self, model: nn.Module, module: nn.Module, optimizer: torch.optim.Optimizer, dist: Dist) -> None:
        """`module` holds `model` and returns the loss from its forward; call `self.module` for the forward."""
        self.optimizer, self.accelerator, self.engine = optimizer, None, None
        self._blocks = contextlib.ExitStack()
        self.module: nn.Module = module
        device = next(model.parameters()).device
        if dist.deepspeed is not None:
            from star.parallel.zero3 import training_engine

            engine = training_engine(model, self.module, optimizer, dist.deepspeed, device, dist.world)
            self.engine = self.module = self._blocks.enter_context(engine)
        elif dist.world > 1 and not dist.sharded:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=device.type == "cpu")
            self.module = self.accelerator.prepare_model(self.module)

    def backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
        else:
            loss.backward()

    def step(self) -> None:
        if self.engine is not None:
            self.engine.step()  # also zeroes the gradients
        else:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

    def __enter__(self) -> Stepper:
        return self

    def __exit__(self, *exc: object) -> None:
        self._blocks.__exit__(*exc)
        if self.accelerator is not None:
            self.accelerator.free_memory()
