"""Scoring in bf16 on a CPU casts the frozen weights once per phase (engine/precision.py): the same bits as
autocast casting them at every call, the original weights (tied ones included) back afterwards, and
nothing cast that trains, is sharded or is not on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_helpers import tuned_tiny_model
from torch import nn

from star.engine.generation import generate_batch
from star.engine.precision import autocast, frozen_weights_cast, scoring_precision
from star.engine.scoring import score_pairs

PROMPTS = [list(range(60, 60 + k)) for k in (3, 9, 5, 12)]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path):
    return tuned_tiny_model(tiny_model_dir, seed=3, dropout=0.2)


def _answers_and_scores(loaded):
    """Greedy answers with their statistics, and K = 2 MC-dropout scores of them."""
    model, tok = loaded.model, loaded.tokenizer
    with torch.inference_mode():
        gens = generate_batch(model, tok, PROMPTS, 10, stats=True)
        u = score_pairs(model, PROMPTS, [g.token_ids or [1] for g in gens], tok.pad_token_id, 4, passes=2, seed=5)
    return gens, u


def test_the_once_cast_gives_autocasts_bits(loaded) -> None:
    with autocast("bf16", CPU):
        want_gens, want_u = _answers_and_scores(loaded)
    with scoring_precision("bf16", loaded.model, CPU):
        got_gens, got_u = _answers_and_scores(loaded)
    assert [g.token_ids for g in got_gens] == [g.token_ids for g in want_gens]
    assert [g.logprobs for g in got_gens] == [g.logprobs for g in want_gens]  # bitwise, not approximately
    np.testing.assert_array_equal(got_u.pe, want_u.pe)
    np.testing.assert_array_equal(got_u.me, want_u.me)


def test_frozen_linear_weights_are_swapped_for_the_phase_and_put_back(loaded) -> None:
    model = loaded.model
    before = {name: p for name, p in model.named_parameters()}
    frozen = [m for m in model.modules() if isinstance(m, nn.Linear) and not m.weight.requires_grad]
    with frozen_weights_cast(model, torch.bfloat16) as n:
        assert n == len(frozen) > 0
        assert all(m.weight.dtype == torch.bfloat16 for m in frozen)
        lora = [p for name, p in model.named_parameters() if "lora_" in name]
        assert lora and all(p.dtype == torch.float32 and p.requires_grad for p in lora)  # the adapter trains: kept
        embed = model.get_input_embeddings().weight
        assert embed.dtype == torch.float32  # tied to lm_head, whose swap leaves the embedding itself alone
    after = {name: p for name, p in model.named_parameters()}
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    head = model.get_output_embeddings()
    assert head.weight is model.get_input_embeddings().weight  # the tie is intact


def test_the_weights_come_back_when_the_phase_fails(loaded) -> None:
    before = [p for p in loaded.model.parameters()]
    with pytest.raises(RuntimeError, match="interrupted"), frozen_weights_cast(loaded.model, torch.bfloat16):
        raise RuntimeError("interrupted")
    assert all(a is b for a, b in zip(loaded.model.parameters(), before, strict=True))


def test_only_plain_frozen_fp32_cpu_linears_are_cast() -> None:
    layers = nn.ModuleDict({"frozen": nn.Linear(4, 4), "trained": nn.Linear(4, 4), "fp16": nn.Linear(4, 4),
                            "hooked": nn.Linear(4, 4)})
    for name in ("frozen", "fp16", "hooked"):
        layers[name].weight.requires_grad_(False)
    layers["fp16"].half()
    layers["hooked"]._hf_hook = object()  # accelerate moves this one's weights itself
    with frozen_weights_cast(layers, torch.bfloat16) as n:
        assert n == 1 and layers["frozen"].weight.dtype == torch.bfloat16
        assert layers["trained"].weight.dtype == torch.float32 and layers["hooked"].weight.dtype == torch.float32
        assert layers["fp16"].weight.dtype == torch.float16


def test_fp32_scoring_casts_nothing(loaded) -> None:
    before = [p for p in loaded.model.parameters()]
    with scoring_precision("fp32", loaded.model, CPU):
        assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
        assert all(a is b for a, b in zip(loaded.model.parameters(), before, strict=True))
