"""One round of LoRA training: answer-token loss, AdamW with decay on lora_B only, linear schedule.

Constraint LoRA's L2 part: B (zero-initialised) gets decoupled weight decay beta, A none, so
the adapter's update BA is pulled towards zero without shrinking A's random projection.
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

from .batching import collate_pairs, length_batches
from .config import TrainConfig
from .forward import response_loss
from .modeling import lora_parameters


@dataclass
class TrainStats:
    """What a round of training did."""

    steps: int
    examples: int
    tokens: int
    final_loss: float
    mean_loss: float
    seconds: float


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
    warmup = int(math.ceil(total_steps * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_adapter(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
                  config: TrainConfig, seed: int, show_progress: bool = True) -> TrainStats:
    """Fit the live adapter on (prompt, response) pairs; deterministic for a given seed."""
    start = time.perf_counter()
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # LoRA dropout masks
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    steps_per_epoch = math.ceil(len(prompts) / config.batch_size)
    total = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config)
    scheduler = linear_schedule(optimizer, total, config.warmup_ratio)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    losses, tokens = [], 0
    bar = tqdm(total=total, desc="train", unit="step", disable=not show_progress, leave=False)
    for _epoch in range(config.epochs):
        for idx in length_batches(lengths, config.batch_size, rng):
            batch = collate_pairs([prompts[i] for i in idx], [responses[i] for i in idx], pad_id).to(device)
            loss = response_loss(model, batch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            tokens += int(batch.targets.numel())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    if config.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    return TrainStats(len(losses), len(prompts), tokens, losses[-1] if losses else float("nan"),
                      float(np.mean(losses)) if losses else float("nan"), time.perf_counter() - start)
