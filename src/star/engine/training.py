"""One round of LoRA training: answer-token loss, AdamW with decay on lora_B only, linear schedule.

Constraint LoRA's L2 part: B (zero-initialised) is pulled towards zero, A is not, so the
adapter's update BA shrinks without shrinking A's random projection. Two forms, either or both:
- `train.weight_decay_b` (the release's): AdamW's decoupled decay, B <- B - lr * beta * B per
  step, outside the gradient, so Adam's normalisation never rescales it;
- `train.b_penalty` (the paper's objective): beta * sum(B^2) added to the loss, so the
  gradient gains 2 beta B, which Adam then normalises with the data gradient (coupled L2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from star.al.seeds import row_seed
from star.config import TrainConfig
from star.engine.adapter import lora_parameters
from star.engine.batching import PairBatch, collate_pairs, length_batches
from star.engine.forward import cross_entropy_sum, response_logits
from star.engine.precision import autocast_dtype, autocast_to
from star.engine.seeded_dropout import row_seeds
from star.errors import ConfigError
from star.parallel.distributed import Dist
from star.parallel.stepper import Stepper


@dataclass
class TrainStats:
    """What a round of training did."""

    steps: int
    examples: int
    tokens: int
    final_loss: float
    mean_loss: float
    seconds: float
    precision: str = "fp32"


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: lora_A (decay weight_decay_a, 0 by default) and lora_B (beta)."""
    a_params, b_params = lora_parameters(model)
    for p in a_params + b_params:
        p.requires_grad_(True)
    return torch.optim.AdamW(
        [
            {"params": a_params, "weight_decay": config.weight_decay_a, "name": "lora_A"},
            {"params": b_params, "weight_decay": config.weight_decay_b, "name": "lora_B"},
        ],
        lr=config.lr,
    )


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up (default none, as the release) then linear decay to 0."""
    warmup = math.ceil(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def b_penalty(b_params: Sequence[nn.Parameter], beta: float) -> torch.Tensor:
    """beta * sum(B^2) over the elements of the adapter's B matrices, in fp32: its gradient is 2 beta B."""
    return beta * sum((b.float() ** 2).sum() for b in b_params)


def check_b_penalty(config: TrainConfig, dist: Dist) -> None:
    """Refuse train.b_penalty under FSDP / ZeRO-3, before anything loads or trains.

    There B is split across the processes and its whole value exists only inside a layer's
    forward; a penalty computed on the local shards would bypass the engine's gradient
    reduction. One process and DDP (B whole on every process) are supported.
    """
    if config.b_penalty and dist.sharded:
        raise ConfigError(f"train.b_penalty={config.b_penalty} is not supported under {dist.engine}: lora_B is sharded"
                          " across the processes",
                          hint="set train.b_penalty=0 (train.weight_decay_b still decays B), or run it in one process"
                               " or with DDP (examples/accelerate/ddp.yaml)")


class ResponseLoss(nn.Module):
    """The model plus its answer-token loss in one forward, so DDP wraps the whole step."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: PairBatch, total_tokens: int, world: int) -> torch.Tensor:
        """Sum of token losses / tokens of the *global* batch, times world (DDP averages over processes)."""
        logits = response_logits(self.model, batch)  # (M, V)
        loss_sum = cross_entropy_sum(logits, batch.targets)
        return loss_sum * world / total_tokens


def _step_rows(idx: list[int], responses: Sequence[list[int]], epoch: int, seed: int, dist: Dist,
               ) -> tuple[list[int], list[int], int, float]:
    """This process's rows of a global batch, their dropout seeds, the batch's response tokens, and a loss weight.

    A batch smaller than the number of processes leaves some with no rows. They still run a
    forward and backward (DDP's all-reduce and FSDP's all-gathers need every process), on a
    stand-in row whose loss is weighted 0.
    """
    total = sum(len(responses[i]) for i in idx)
    mine, weight = dist.shard(idx), 1.0
    if not mine:
        mine, weight = idx[:1], 0.0
    return mine, [row_seed(seed, i, epoch) for i in mine], total, weight


def _checkpointing(model: nn.Module, on: bool) -> None:
    """Activation (gradient) checkpointing on or off, by transformers' current name where it has one."""
    if on:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # transformers < 5.x
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()


def train_adapter(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
                  config: TrainConfig, seed: int, show_progress: bool = True, *, dist: Dist = Dist()) -> TrainStats:
    """Fit the live adapter on (prompt, response) pairs; deterministic for a given seed.

    Each global batch is the same whatever the number of processes: every process takes a
    share of its rows, and each row's dropout mask comes from its own seed, so a multi-process
    run trains the same adapter as one process (up to floating-point summation order). `dist`: this
    process's place in the run (one process by default).

    `train.b_penalty` is added unscaled on every process, a stand-in's too: DDP averages the
    processes' gradients, so B's gradient gains exactly 2 beta B per step whatever the world
    size (the data loss is scaled by world in `ResponseLoss` for the same average).
    """
    check_b_penalty(config, dist)
    start = time.perf_counter()
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    total_steps = math.ceil(len(prompts) / config.batch_size) * config.epochs
    optimizer = make_optimizer(model, config)
    b_params = lora_parameters(model)[1]
    scheduler = linear_schedule(optimizer, total_steps, config.warmup_ratio)
    if config.gradient_checkpointing:
        _checkpointing(model, True)
        model.enable_input_require_grads()
    amp = autocast_dtype(config.precision, device)
    model.train()
    losses, tokens = [], 0
    bar = tqdm(total=total_steps, desc="train", unit="step", disable=not show_progress or not dist.is_main, leave=False)
    with Stepper(model, ResponseLoss(model), optimizer, dist) as stepper:
        for epoch in range(config.epochs):
            for idx in length_batches(lengths, config.batch_size, rng):
                mine, seeds, total, weight = _step_rows(idx, responses, epoch, seed, dist)
                batch = collate_pairs([prompts[i] for i in mine], [responses[i] for i in mine], pad_id).to(device)
                with row_seeds(seeds, batch.attention_mask.sum(1).tolist()):  # also around backward: checkpointing recomputes
                    with autocast_to(amp, device):
                        loss = stepper.module(batch, total, dist.world) * weight  # the forward only: backward follows autocast
                    stepper.backward(loss + b_penalty(b_params, config.b_penalty) if config.b_penalty else loss)
                stepper.step()
                scheduler.step()
                losses.append(dist.sum(float(loss.detach()) / dist.world))  # the global batch's mean token loss
                tokens += total
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    if config.gradient_checkpointing:
        _checkpointing(model, False)
    return TrainStats(len(losses), len(prompts), tokens, losses[-1] if losses else float("nan"),
                      float(np.mean(losses)) if losses else float("nan"), time.perf_counter() - start,
                      "bf16" if amp is not None else "fp32")
