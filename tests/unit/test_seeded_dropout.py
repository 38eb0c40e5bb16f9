"""Row-seeded LoRA dropout: each row's mask comes from its own seed, whatever its batch."""

from __future__ import annotations

import torch

from star.seeded_dropout import RowSeededDropout, _mask_seed, row_seeds


def _reference(x_row: torch.Tensor, seed: int, layer_key: int, length: int, p: float) -> torch.Tensor:
    """Inverted dropout written out: positions < length draw U(0,1) from the row's generator; drop if < p."""
    g = torch.Generator().manual_seed(_mask_seed(seed, layer_key))
    draw = torch.rand((length, x_row.shape[1]), generator=g)
    out = x_row.clone()
    out[:length] = torch.where(draw < p, torch.zeros_like(draw), x_row[:length] / (1 - p))
    out[length:] = x_row[length:] / (1 - p)  # padding is not masked (its outputs are never used)
    return out


def test_mask_is_the_rows_own_and_values_match_the_written_out_dropout() -> None:
    torch.manual_seed(0)
    drop = RowSeededDropout(0.25, layer_key=7).train()
    x = torch.randn(3, 6, 5)  # (B, T, d)
    seeds, lengths = [11, 12, 13], [6, 4, 2]
    with row_seeds(seeds, lengths):
        y = drop(x)
    for b in range(3):
        torch.testing.assert_close(y[b], _reference(x[b], seeds[b], 7, lengths[b], 0.25), rtol=1e-6, atol=0)
    with row_seeds(seeds[1:2], lengths[1:2]):  # the same row alone in its batch: the same mask
        torch.testing.assert_close(drop(x[1:2])[0], y[1], rtol=0, atol=0)
    assert (y == 0).any() and (y != 0).any()


def test_eval_mode_and_p_zero_are_the_identity() -> None:
    x = torch.randn(2, 3, 4)
    assert torch.equal(RowSeededDropout(0.5, 0).eval()(x), x)
    with row_seeds([1, 2], [3, 3]):
        assert torch.equal(RowSeededDropout(0.0, 0).train()(x), x)
