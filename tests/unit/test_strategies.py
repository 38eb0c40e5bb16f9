"""Query strategies and lambda(t) schedules: exact selections on hand-made scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from star.al.schedules import SCHEDULES, lambda_at, linear
from star.al.strategies import STRATEGIES, ScoreInputs, get_strategy, minmax, top_k


def inputs(u_base, u_full, lam_t: float = 0.5, seed: int = 0) -> ScoreInputs:
    u_base = None if u_base is None else np.asarray(u_base, dtype=np.float64)
    u_full = None if u_full is None else np.asarray(u_full, dtype=np.float64)
    n = len(u_full if u_full is not None else u_base)
    emb = np.random.default_rng(99).normal(size=(n + 3, 4))  # k-center, idds, +diverse: fixed random embeddings
    return ScoreInputs(u_base, u_full, lam_t, np.random.default_rng(seed), n, embeddings=emb[:n], labelled_embeddings=emb[n:])


def picks(name: str, u_base, u_full, k: int, lam_t: float = 0.5, seed: int = 0) -> list[int]:
    return get_strategy(name).select(inputs(u_base, u_full, lam_t, seed), k)[1].tolist()


# --- minmax / top_k --------------------------------------------------------------------------


def test_minmax_maps_to_unit_interval() -> None:
    np.testing.assert_allclose(minmax([2.0, 4.0, 6.0, 3.0]), [0.0, 0.5, 1.0, 0.25])
    np.testing.assert_allclose(minmax([-3.0, -1.0]), [0.0, 1.0])


@pytest.mark.parametrize("const", [[3.0, 3.0, 3.0], [0.0], [-7.5, -7.5]])
def test_minmax_of_a_constant_array_is_zeros(const: list[float]) -> None:
    out = minmax(const)
    assert out.shape == (len(const),)
    np.testing.assert_array_equal(out, np.zeros(len(const)))
    assert np.isfinite(out).all()


def test_minmax_of_an_empty_array_is_empty() -> None:
    assert minmax(np.array([])).shape == (0,)


def test_top_k_ties_go_to_the_lower_index() -> None:
    scores = [1.0, 3.0, 3.0, 2.0, 3.0]
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 4).tolist() == [1, 2, 4, 3]
    assert top_k([0.0] * 5, 3).tolist() == [0, 1, 2]


def test_top_k_orders_by_score_and_caps_at_n() -> None:
    assert top_k([0.1, 0.9, 0.5], 3).tolist() == [1, 2, 0]
    assert top_k([0.1, 0.9, 0.5], 10).tolist() == [1, 2, 0]


# --- every registered strategy: the contract ---------------------------------------------------


def test_registry_names_and_flags() -> None:
    star = {"random", "entropy", "pe", "entropy-subtract", "pe-subtract", "entropy-dynamic", "pe-dynamic"}
    # issue #14's: test_disagreement.py checks bald and pe-spread's flags, test_diversity.py the diversity ones'
    uncertainty = (star - {"random"}) | {"bald", "bald-dynamic", "pe-spread", "pe-spread-dynamic"}
    diverse = {"k-center", "idds"} | {f"{name}+diverse" for name in uncertainty}
    assert set(STRATEGIES) == star | uncertainty | diverse
    for name in sorted(star):
        s = get_strategy(name)
        assert s.name == name
        if name == "random":
            assert s.measure is None and not s.uses_base and not s.uses_full
            continue
        assert s.measure == ("me" if name.startswith("entropy") else "pe")
        assert s.uses_full
        assert s.uses_base == (name.endswith(("-subtract", "-dynamic")))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("k", [1, 5, 20])
def test_every_strategy_returns_k_distinct_indices_deterministically(name: str, k: int) -> None:
    n = 20
    data = np.random.default_rng(42)
    u_base, u_full = data.random(n), data.random(n) * 10
    scores, chosen = get_strategy(name).select(inputs(u_base, u_full, 0.3, seed=7), k)
    assert scores.shape == (n,)
    assert len(chosen) == k and len(set(chosen.tolist())) == k
    assert all(0 <= int(i) < n for i in chosen)
    # Listed highest score first (ties: lower index), the order a resume reads back from scores.jsonl.
    assert chosen.tolist() == sorted(chosen.tolist(), key=lambda i: (-scores[i], i))
    # The chosen are the top-k of the scores it reports (idds, +diverse: greedy / spread, they need not be).
    if name != "idds" and not name.endswith("+diverse"):
        assert min(scores[chosen]) >= max(np.delete(scores, chosen), default=-np.inf)
    again = get_strategy(name).select(inputs(u_base, u_full, 0.3, seed=7), k)[1]
    np.testing.assert_array_equal(chosen, again)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_handles_a_constant_pool(name: str) -> None:
    chosen = picks(name, [1.0] * 6, [2.0] * 6, 3)
    assert len(set(chosen)) == 3
    if name != "random" and not get_strategy(name).uses_embeddings:  # all scores tie: lowest indices
        assert chosen == [0, 1, 2]


# --- exact selections ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["entropy", "pe"])
def test_uncertainty_strategies_pick_the_highest_u_full(name: str) -> None:
    u_full = [0.3, 5.0, -1.0, 2.0, 4.9]
    assert picks(name, None, u_full, 1) == [1]
    assert picks(name, None, u_full, 3) == [1, 4, 3]
    # u_base plays no part.
    assert picks(name, [100.0, 0.0, 0.0, 0.0, 0.0], u_full, 3) == [1, 4, 3]


@pytest.mark.parametrize("name", ["entropy-subtract", "pe-subtract"])
def test_subtract_picks_the_highest_normalised_difference(name: str) -> None:
    u_full = [0.0, 10.0, 4.0, 6.0]  # norm: 0, 1, .4, .6
    u_base = [0.0, 1000.0, 100.0, 0.0]  # norm: 0, 1, .1, 0
    # norm difference: 0, 0, .3, .6 -> [3, 2]; a raw difference (6, -990, -96, 0) would give [3, 0].
    scores, chosen = get_strategy(name).select(inputs(u_base, u_full), 2)
    np.testing.assert_allclose(scores, [0.0, 0.0, 0.3, 0.6], atol=1e-12)
    assert chosen.tolist() == [3, 2]


@pytest.mark.parametrize("name", ["entropy-dynamic", "pe-dynamic"])
def test_dynamic_mixes_normalised_scores_with_lambda(name: str) -> None:
    u_base = [0.10, 0.0, 0.05]  # norm: 1, 0, .5  (tiny scale)
    u_full = [0.0, 400.0, 200.0]  # norm: 0, 1, .5  (large scale)
    # lambda 0.9: .9, .1, .5 -> example 0 (the base model's favourite) first.
    scores, chosen = get_strategy(name).select(inputs(u_base, u_full, lam_t=0.9), 2)
    np.testing.assert_allclose(scores, [0.9, 0.1, 0.5], atol=1e-12)
    assert chosen.tolist() == [0, 2]
    # lambda 0.1: .1, .9, .5 -> example 1 (the tuned model's favourite) first.
    scores, chosen = get_strategy(name).select(inputs(u_base, u_full, lam_t=0.1), 2)
    np.testing.assert_allclose(scores, [0.1, 0.9, 0.5], atol=1e-12)
    assert chosen.tolist() == [1, 2]
    # Mixing raw scores at lambda 0.9 would pick example 1 (0.9*0.1 << 0.1*400): the pick of 0
    # above depends on normalising both terms.
    assert int(np.argmax(0.9 * np.array(u_base) + 0.1 * np.array(u_full))) == 1
    assert picks(name, u_base, u_full, 1, lam_t=1.0) == [0]
    assert picks(name, u_base, u_full, 1, lam_t=0.0) == [1]


def test_random_is_reproducible_for_a_seed_and_varies_across_seeds() -> None:
    n, k = 100, 10
    a = picks("random", None, np.zeros(n), k, seed=3)
    b = picks("random", None, np.zeros(n), k, seed=3)
    c = picks("random", None, np.zeros(n), k, seed=4)
    assert a == b
    assert a != c
    assert len(set(a)) == k


def test_random_ignores_the_scores() -> None:
    n = 50
    a = picks("random", np.arange(n), np.arange(n), 5, seed=11)
    b = picks("random", -np.arange(n), np.ones(n), 5, seed=11)
    assert a == b


# --- lambda(t) schedules ---------------------------------------------------------------------


def test_linear_is_the_release_schedule() -> None:
    values = [linear(t, 10) for t in range(9)]  # models 0..8 select the 9 queries of T = 10
    np.testing.assert_allclose(values, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], atol=1e-12)
    assert [lambda_at("linear", t, 10) for t in range(9)] == values
    assert linear(9, 10) == pytest.approx(0.0)
    assert linear(20, 10) == 0.0  # never negative past the horizon


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("horizon", [2, 4, 10])
def test_every_schedule_is_monotone_non_increasing_within_0_1(name: str, horizon: int) -> None:
    values = [lambda_at(name, t, horizon, 0.5) for t in range(horizon)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a >= b for a, b in itertools.pairwise(values))
    if name != "constant":
        assert all(a > b for a, b in itertools.pairwise(values)), values
        assert values[0] < 1.0  # model 0 already hands some weight to the tuned model


@pytest.mark.parametrize("value", [0.0, 0.25, 1.0])
def test_constant_returns_its_value(value: float) -> None:
    assert {lambda_at("constant", t, 10, value) for t in range(10)} == {value}


def test_exponential_and_cosine_values() -> None:
    assert [lambda_at("exponential", t, 10, 0.5) for t in range(3)] == [0.5, 0.25, 0.125]
    assert lambda_at("cosine", 4, 10) == pytest.approx(0.5)  # half-way: (t + 1) / T = 0.5
    assert lambda_at("cosine", 9, 10) == pytest.approx(0.0, abs=1e-12)
