"""The preallocated KV cache layer holds exactly what transformers' DynamicLayer holds, update by update."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from star.engine.kv_cache import BufferedLayer


def _pair(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 4, generator=gen), torch.randn(rows, 2, length, 4, generator=gen)


def test_buffered_layer_matches_dynamic_layer_through_growth_selection_and_repetition() -> None:
    plain, buffered = DynamicLayer(), BufferedLayer.replacing(DynamicLayer(), capacity=6)
    steps = [("update", 1, 5), ("repeat", 3), ("update", 3, 1), ("update", 3, 2),  # 8 > 6: the buffer grows
             ("select", torch.tensor([2, 0])), ("update", 2, 1), ("update", 2, 7)]
    for i, step in enumerate(steps):
        if step[0] == "update":
            k, v = _pair(step[1], step[2], seed=i)
            want, got = plain.update(k, v), buffered.update(k, v)
        elif step[0] == "repeat":
            plain.batch_repeat_interleave(step[1])
            buffered.batch_repeat_interleave(step[1])
            want, got = (plain.keys, plain.values), (buffered.keys, buffered.values)
        else:
            plain.batch_select_indices(step[1])
            buffered.batch_select_indices(step[1])
            want, got = (plain.keys, plain.values), (buffered.keys, buffered.values)
        assert all(torch.equal(g, w) for g, w in zip(got, want)), step
        assert buffered.get_seq_length() == plain.get_seq_length()
    assert buffered.get_seq_length() == 16 and buffered.k_buf.shape[-2] >= 16
