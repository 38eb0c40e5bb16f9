"""Row-seeded LoRA dropout: each row's mask comes from its own seed, whatever its batch."""

from __future__ import annotations

import torch

from star.engine.seeded_dropout import RowSeededDropout, _mask_seed, row_seeds


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


def test_masks_drawn_on_several_threads_equal_the_serial_draws_and_continue_their_streams(monkeypatch) -> None:
    """keep_cpu draws the rows on torch's CPU threads; the masks (and continued streams) are the serial ones."""
    from star.engine import seeded_dropout
    from star.engine.seeded_dropout import continued_draws, keep_cpu

    monkeypatch.setattr(seeded_dropout, "_THREADED_DRAW_MIN", 0)  # these small masks go to the pool too
    pooled, pool_map = [], seeded_dropout.ThreadPoolExecutor.map

    def counted_map(self, fn, *iterables, **kwargs):
        pooled.append(1)
        return pool_map(self, fn, *iterables, **kwargs)

    monkeypatch.setattr(seeded_dropout.ThreadPoolExecutor, "map", counted_map)

    shape, seeds, lengths = torch.Size((5, 9, 16)), [3, 1, 4, 1, 5], [9, 0, 4, 7, 1]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = keep_cpu(shape, seeds, lengths, 2, 0.3)
        with continued_draws():  # a prefix of 4 tokens, then the next 3 continuing its stream
            keep_cpu(torch.Size((5, 4, 16)), seeds, [4] * 5, 2, 0.3)
            serial_next = keep_cpu(torch.Size((5, 3, 16)), seeds, [3] * 5, 2, 0.3, starts=[4] * 5)
        torch.set_num_threads(2)
        threaded = keep_cpu(shape, seeds, lengths, 2, 0.3)
        with continued_draws():
            keep_cpu(torch.Size((5, 4, 16)), seeds, [4] * 5, 2, 0.3)
            threaded_next = keep_cpu(torch.Size((5, 3, 16)), seeds, [3] * 5, 2, 0.3, starts=[4] * 5)
        threaded_draws = len(pooled)
    finally:
        torch.set_num_threads(before)
    assert threaded_draws == 3 and torch.equal(threaded, serial) and torch.equal(threaded_next, serial_next)
    assert serial[1].all() and serial[2, 4:].all() and not serial[0].all()  # padding kept, rows masked
    assert torch.equal(serial_next, keep_cpu(torch.Size((5, 7, 16)), seeds, [7] * 5, 2, 0.3)[:, 4:])


def test_the_scaled_mask_gives_the_bits_of_x_times_keep_times_scale_forward_and_backward() -> None:
    from star.engine.seeded_dropout import _ScaledKeep

    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, requires_grad=True)
    keep = (torch.rand(2, 5, 8) > 0.3).to(torch.uint8)
    grad = torch.randn(2, 5, 8)
    plain = x * keep * (1 / 0.7)
    (gx_plain,) = torch.autograd.grad(plain, x, grad)
    fused = _ScaledKeep.apply(x, keep, 1 / 0.7)
    (gx_fused,) = torch.autograd.grad(fused, x, grad)
    assert torch.equal(fused, plain) and torch.equal(gx_fused, gx_plain)


# --- masks hashed on the device (accelerators) -----------------------------------------------------

def _lowbias32(x: int) -> int:
    """The hash written with Python's unbounded ints, wrapping explicitly."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_the_tensor_hash_is_exact_without_int64_overflow() -> None:
    from star.engine.seeded_dropout import _hash32

    values = [0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1] + torch.randint(0, 2**32, (200,),
                                                                                     generator=torch.Generator().manual_seed(0)).tolist()
    got = _hash32(torch.tensor(values, dtype=torch.long)).tolist()
    assert got == [_lowbias32(v) for v in values]
    assert _hash32(2**32 - 1) == _lowbias32(2**32 - 1)  # the same function on a Python int


def test_hashed_masks_are_per_row_keep_padding_and_drop_at_rate_p() -> None:
    from star.engine.seeded_dropout import keep_hashed

    p, shape = 0.25, torch.Size((4, 64, 256))
    keep = keep_hashed(shape, [5, 6, 7, 8], [64, 64, 40, 1], layer_key=3, p=p, device="cpu")
    assert keep.dtype == torch.uint8 and keep.shape == shape
    assert abs(keep[:2].float().mean().item() - (1 - p)) < 0.01  # 32,768 draws: std of the rate ~0.0024
    assert keep[2, 40:].all() and keep[3, 1:].all()  # positions past a row's length are kept
    alone = keep_hashed(torch.Size((1, 64, 256)), [7], [40], layer_key=3, p=p, device="cpu")
    assert torch.equal(alone[0], keep[2])  # the row's own mask, whatever else is in the batch
    shorter = keep_hashed(torch.Size((1, 50, 256)), [7], [40], layer_key=3, p=p, device="cpu")
    assert torch.equal(shorter[0, :40], keep[2, :40])  # and whatever the padded width
    agree = (keep[0] == keep[1]).float().mean().item()  # independent rows agree at (1-p)^2 + p^2 = 0.625
    assert abs(agree - 0.625) < 0.02
    other_layer = keep_hashed(shape, [5, 6, 7, 8], [64, 64, 40, 1], layer_key=4, p=p, device="cpu")
    assert abs((other_layer[0] == keep[0]).float().mean().item() - 0.625) < 0.02
    assert keep_hashed(torch.Size((1, 64, 256)), [5], [64], layer_key=3, p=0.0, device="cpu").all()


def test_an_accelerator_forward_uses_the_hashed_mask(monkeypatch) -> None:
    import star.engine.seeded_dropout as sd

    assert not sd.masks_on_device(torch.device("cpu")) and sd.masks_on_device(torch.device("meta"))
    monkeypatch.setattr(sd, "masks_on_device", lambda device: True)  # as on CUDA, but testable here
    x = torch.randn(2, 5, 8)
    drop = RowSeededDropout(0.5, layer_key=1).train()
    with row_seeds([3, 4], [5, 2]):
        y = drop(x)
    keep = sd.keep_hashed(x.shape, [3, 4], [5, 2], 1, 0.5, "cpu")
    torch.testing.assert_close(y, x * keep * 2.0, rtol=0, atol=0)


def test_a_forked_child_draws_on_a_pool_of_its_own() -> None:
    """A child forked after the parent drew on the pool inherits the pool object but none of its threads."""
    import multiprocessing

    from star.engine import seeded_dropout

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        shape, seeds, lengths = torch.Size((4, 64, 512)), [1, 2, 3, 4], [64, 64, 30, 64]  # above the pool's minimum
        parent = seeded_dropout.keep_cpu(shape, seeds, lengths, 0, 0.2)
        assert seeded_dropout._POOL is not None
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as child:
            result = child.apply_async(_child_keep, (shape, seeds, lengths))
            assert torch.equal(torch.from_numpy(result.get(timeout=60)), parent)
    finally:
        torch.set_num_threads(before)


def _child_keep(shape: torch.Size, seeds: list[int], lengths: list[int]) -> object:
    from star.engine import seeded_dropout

    torch.set_num_threads(2)
    return seeded_dropout.keep_cpu(shape, seeds, lengths, 0, 0.2).numpy()


def test_pool_draws_under_inference_mode_fill_the_callers_inference_tensor(monkeypatch) -> None:
    """Inference mode is thread-local: the pool's threads must enter it to write the caller's mask."""
    from star.engine import seeded_dropout

    monkeypatch.setattr(seeded_dropout, "_THREADED_DRAW_MIN", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        shape, seeds, lengths = torch.Size((3, 6, 8)), [1, 2, 3], [6, 2, 0]
        with torch.inference_mode():
            inside = seeded_dropout.keep_cpu(shape, seeds, lengths, 0, 0.5)
        outside = seeded_dropout.keep_cpu(shape, seeds, lengths, 0, 0.5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(inside, outside)
