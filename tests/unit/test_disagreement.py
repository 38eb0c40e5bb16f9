"""Disagreement between MC-dropout passes: BALD over answer options, the spread of PE; their strategies and config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from star.al.strategies import ScoreInputs, get_strategy
from star.al.uncertainty import Uncertainty, bald, option_uncertainty, pe_spread
from star.config import build_config
from star.errors import ConfigError

# H(0.9, 0.1) = -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.9 x 0.1053605 + 0.1 x 2.3025851 = 0.0948245 + 0.2302585
H_09 = 0.3250830
LOG2 = 0.6931472


def _logp(probs: list[list[list[float]]], scale: float = 1.0) -> np.ndarray:
    """log p (n, C, K) from probabilities written [example][pass][option], times `scale` (not renormalised)."""
    return np.log(np.transpose(np.array(probs) * scale, (0, 2, 1)))  # (n, K, C) -> (n, C, K)


# --- BALD ------------------------------------------------------------------------------------


def test_bald_against_a_hand_computed_case() -> None:
    # Example 0: both passes say (0.8, 0.2): they agree, BALD 0.
    # Example 1: pass 1 (0.9, 0.1), pass 2 (0.1, 0.9): mean (0.5, 0.5), H(mean) = ln 2 = 0.6931472;
    #   each pass's entropy H(0.9, 0.1) = 0.3250830; BALD = 0.6931472 - 0.3250830 = 0.3680642.
    # The log p are of unnormalised values (x 0.5): option_uncertainty renormalises over the options.
    u = option_uncertainty(_logp([[[0.8, 0.2], [0.8, 0.2]], [[0.9, 0.1], [0.1, 0.9]]], scale=0.5))
    assert u.option_probs is not None and u.option_probs.shape == (2, 2, 2)
    np.testing.assert_allclose(u.value("bald"), [0.0, 0.3680642], atol=1e-7)
    assert LOG2 - H_09 == pytest.approx(0.3680642, abs=1e-7)
    # ME, the total uncertainty, is the mean of the passes' entropies: the same for both passes of example 1.
    np.testing.assert_allclose(u.value("me"), [-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)), H_09], atol=1e-7)


def test_bald_of_three_options_and_three_passes_by_hand() -> None:
    # passes: (1/3, 1/3, 1/3), (1, 0, 0) as a limit (1 - 2e, e, e) with e -> 0, (0, 1, 0) likewise.
    # mean (0.4444, 0.4444, 0.1111): H = -(2 x 4/9 ln 4/9 + 1/9 ln 1/9) = 0.7208 + 0.2441 = 0.9650;
    # mean entropy (ln 3 + 0 + 0) / 3 = 0.3662; BALD = 0.5988.
    e = 1e-12
    probs = np.array([[[1 / 3, 1 - 2 * e, e], [1 / 3, e, 1 - 2 * e], [1 / 3, e, e]]])  # (1, C=3, K=3)
    want = -(2 * 4 / 9 * math.log(4 / 9) + 1 / 9 * math.log(1 / 9)) - math.log(3) / 3
    assert want == pytest.approx(0.5988, abs=1e-4)
    np.testing.assert_allclose(bald(probs), [want], atol=1e-9)


def test_bald_is_non_negative_bounded_and_zero_when_passes_agree() -> None:
    rng = np.random.default_rng(0)
    probs = np.transpose(rng.dirichlet(np.ones(4) * 0.3, size=(50, 3)), (0, 2, 1))  # (n=50, C=4, K=3)
    values = bald(probs)
    assert values.shape == (50,)
    assert (values >= 0).all() and (values <= math.log(4) + 1e-12).all() and (values > 1e-3).any()
    agree = np.repeat(probs[:, :, :1], 3, axis=2)  # every pass = pass 0
    np.testing.assert_array_equal(bald(agree), np.zeros(50))
    np.testing.assert_array_equal(bald(probs[:, :, :1]), np.zeros(50))  # one pass: nothing to disagree


def test_bald_needs_option_probabilities() -> None:
    u = Uncertainty(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ConfigError, match="al.response=options"):
        u.value("bald")


# --- PE spread -------------------------------------------------------------------------------


def test_pe_spread_against_hand_values() -> None:
    # Example 0: PE 1.0 on all three passes -> 0. Example 1: 0.5, 1.0, 1.5: mean 1.0, squared deviations
    # 0.25, 0, 0.25 -> population variance 0.5 / 3 = 0.1667, std 0.4082483.
    pe = np.array([[1.0, 1.0, 1.0], [0.5, 1.0, 1.5]])  # (n, K)
    u = Uncertainty(pe, np.zeros_like(pe))
    np.testing.assert_allclose(u.value("pe-spread"), [0.0, 0.4082483], atol=1e-7)
    np.testing.assert_allclose(pe_spread(np.array([[2.0, 3.0]])), [0.5])  # two passes: half their gap
    np.testing.assert_array_equal(pe_spread(np.full((4, 3), 0.1)), np.zeros(4))  # agreeing passes: exactly 0
    np.testing.assert_allclose(u.value("pe"), u.mean("pe"))  # `value` keeps the means of PE / ME


# --- strategies ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "measure", "base", "uses_base"), [
    ("bald", "bald", "me", False), ("bald-dynamic", "bald", "me", True),
    ("pe-spread", "pe-spread", "pe", False), ("pe-spread-dynamic", "pe-spread", "pe", True),
    ("entropy-dynamic", "me", "me", True), ("pe-dynamic", "pe", "pe", True), ("random", None, None, False),
])
def test_strategy_measures(name: str, measure: str | None, base: str | None, uses_base: bool) -> None:
    """The disagreement strategies score the base model (one pass, no disagreement) with a total-uncertainty measure."""
    s = get_strategy(name)
    assert (s.measure, s.base_measure, s.uses_base) == (measure, base, uses_base)
    assert s.uses_full == (name != "random")


def _picks(name: str, base: Uncertainty, tuned: Uncertainty, lam_t: float, k: int = 1) -> list[int]:
    """The loop's inputs: u_base by the strategy's base measure, u_full by its measure."""
    s = get_strategy(name)
    x = ScoreInputs(base.value(s.base_measure), tuned.value(s.measure), lam_t, np.random.default_rng(0), 3)
    return s.select(x, k)[1].tolist()


def test_option_strategies_rank_a_constructed_case() -> None:
    # Tuned model, 2 passes over 2 options:
    #   0: (0.5, 0.5) twice: maximally uncertain, but the passes agree -> ME ln 2, BALD 0
    #   1: (0.95, 0.05) then (0.05, 0.95): confident passes that disagree -> ME 0.199, BALD 0.494
    #   2: (0.7, 0.3) then (0.6, 0.4): a little of both -> ME 0.642, BALD 0.0055
    tuned = option_uncertainty(_logp([[[0.5, 0.5], [0.5, 0.5]], [[0.95, 0.05], [0.05, 0.95]],
                                      [[0.7, 0.3], [0.6, 0.4]]]))
    # Base model, one pass: example 2 the most uncertain (ME), example 1 the least.
    base = option_uncertainty(_logp([[[0.8, 0.2]], [[0.99, 0.01]], [[0.55, 0.45]]]))
    np.testing.assert_allclose(tuned.value("bald"), [0.0, 0.4946, 0.0055], atol=1e-4)
    assert _picks("entropy", base, tuned, 0.5, k=3) == [0, 2, 1]
    assert _picks("bald", base, tuned, 0.5, k=3) == [1, 2, 0]
    # bald-dynamic: lambda 1 is the base model's ME alone, lambda 0 the tuned model's BALD alone;
    # lambda 0.5: norm ME_base (.703, 0, 1) and norm BALD (0, 1, .011) mix to (.352, .5, .506): 2, 1, 0,
    # an order neither term gives alone.
    assert _picks("bald-dynamic", base, tuned, 1.0, k=3) == [2, 0, 1]
    assert _picks("bald-dynamic", base, tuned, 0.0, k=3) == [1, 2, 0]
    assert _picks("bald-dynamic", base, tuned, 0.5, k=3) == [2, 1, 0]


def test_pe_strategies_rank_a_constructed_case() -> None:
    # PE over 3 passes: 0 high but steady (spread 0), 1 low but unsteady (spread 0.816), 2 between (0.082).
    tuned = Uncertainty(np.array([[3.0, 3.0, 3.0], [0.0, 1.0, 2.0], [1.9, 2.0, 2.1]]), np.zeros((3, 3)))
    base = Uncertainty(np.array([[0.5], [2.0], [1.0]]), np.zeros((3, 1)))
    assert _picks("pe", base, tuned, 0.5, k=3) == [0, 2, 1]
    assert _picks("pe-spread", base, tuned, 0.5, k=3) == [1, 2, 0]
    # pe-spread-dynamic, against a base model whose PE (0.5, 2.0, 1.0) ranks 1, 2, 0 and tuned passes whose
    # spread (1.633, 0, 0.082) ranks 0, 2, 1: norm base (0, 1, .333), norm spread (1, 0, .05).
    unsteady = Uncertainty(np.array([[0.0, 2.0, 4.0], [1.0, 1.0, 1.0], [1.9, 2.0, 2.1]]), np.zeros((3, 3)))
    assert _picks("pe-spread-dynamic", base, unsteady, 1.0, k=3) == [1, 2, 0]
    assert _picks("pe-spread-dynamic", base, unsteady, 0.0, k=3) == [0, 2, 1]
    assert _picks("pe-spread-dynamic", base, unsteady, 0.4, k=3) == [0, 1, 2]  # (.6, .4, .163)
    assert _picks("pe-spread-dynamic", base, unsteady, 0.6, k=3) == [1, 0, 2]  # (.4, .6, .22)


# --- config ----------------------------------------------------------------------------------


def _config(**al: object) -> None:
    build_config({"al": al})


@pytest.mark.parametrize("strategy", ["bald", "bald-dynamic"])
@pytest.mark.parametrize("response", ["generated", "gold"])
def test_bald_needs_options(strategy: str, response: str) -> None:
    with pytest.raises(ConfigError, match=f"al.strategy={strategy} scores bald over al.response=options,"
                                          f" not al.response={response}; set al.response=options or use pe-spread"):
        _config(strategy=strategy, response=response)


@pytest.mark.parametrize("strategy", ["pe-spread", "pe-spread-dynamic"])
def test_pe_spread_needs_a_free_response(strategy: str) -> None:
    with pytest.raises(ConfigError, match="over al.response=generated or gold, not al.response=options; set"
                                          " al.response=generated or use bald, bald-dynamic"):
        _config(strategy=strategy, response="options")


@pytest.mark.parametrize("bad", [{"mc_passes": 1}, {"mc_dropout": False}, {"mc_dropout_p": 0.0}])
@pytest.mark.parametrize(("strategy", "response"), [("bald-dynamic", "options"), ("pe-spread", "generated")])
def test_disagreement_needs_several_mc_passes_with_dropout(strategy: str, response: str, bad: dict) -> None:
    with pytest.raises(ConfigError, match=r"compares MC-dropout passes.*set al.mc_dropout=true, al.mc_passes>=2"):
        _config(strategy=strategy, response=response, **bad)


def test_disagreement_needs_lora_dropout_when_mc_dropout_p_is_unset() -> None:
    with pytest.raises(ConfigError, match=r"dropout p=0.0 \(al.mc_dropout_p, else lora.dropout\)"):
        build_config({"al": {"strategy": "bald", "response": "options"}, "lora": {"dropout": 0.0}})
    build_config({"al": {"strategy": "bald", "response": "options", "mc_dropout_p": 0.1}, "lora": {"dropout": 0.0}})


@pytest.mark.parametrize(("strategy", "response"), [("bald", "options"), ("bald-dynamic", "options"),
                                                    ("pe-spread", "generated"), ("pe-spread-dynamic", "gold")])
def test_valid_disagreement_configs_build(strategy: str, response: str) -> None:
    cfg = build_config({"al": {"strategy": strategy, "response": response, "mc_passes": 2}})
    assert cfg.al.strategy == strategy
