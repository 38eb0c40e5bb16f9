"""The loop's scoring call uses al.mc_dropout_p for the tuned model's MC passes, and nothing else changes."""

from __future__ import annotations

import numpy as np
import torch

from star import loop
from star.engine.adapter import lora_parameters


def test_loop_scoring_uses_mc_dropout_p(tiny_run_config: dict) -> None:
    exp = loop.setup(tiny_run_config, show_progress=False)
    try:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in lora_parameters(exp.model.model)[1]:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        idx = list(range(6))

        def u_full(p: float | None) -> np.ndarray:
            exp.config.al.mc_dropout_p = p
            return loop.pool_uncertainty(exp, idx, use_base=False, seed=7).pe  # (n, K)

        null, same, other = u_full(None), u_full(0.1), u_full(0.5)  # lora.dropout is 0.1
        np.testing.assert_array_equal(null, same)
        assert np.abs(other - null).max() > 1e-4
        assert {m.p for n, m in exp.model.model.named_modules() if n.endswith("lora_dropout.default")} == {0.1}
        exp.config.al.mc_dropout_p = 0.5
        base = loop.pool_uncertainty(exp, idx, use_base=True, seed=7).pe  # one deterministic pass: p unused
        exp.config.al.mc_dropout_p = None
        np.testing.assert_array_equal(base, loop.pool_uncertainty(exp, idx, use_base=True, seed=7).pe)
    finally:
        exp.store.close()
