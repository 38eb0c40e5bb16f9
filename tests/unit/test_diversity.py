"""Diversity strategies (issue #14): k-center greedy, IDDS and "+diverse" picks on hand-worked 2-D cases."""

from __future__ import annotations

import re

import numpy as np
import pytest

from star.al.diversity import diverse_top_k, idds, k_center_greedy, kmeans, l2_normalise, spread_by_cluster
from star.al.strategies import STRATEGIES, ScoreInputs, get_strategy, top_k
from star.config import build_config
from star.errors import ConfigError

R2, R10, R20, R101 = np.sqrt(2), np.sqrt(10), np.sqrt(20), np.sqrt(101)


def inputs(embeddings, labelled=None, u_full=None, seed: int = 0, cost=None) -> ScoreInputs:
    e = np.asarray(embeddings, dtype=np.float64)
    u = None if u_full is None else np.asarray(u_full, dtype=np.float64)
    lab = None if labelled is None else np.asarray(labelled, dtype=np.float64)
    return ScoreInputs(u, u, 0.5, np.random.default_rng(seed), len(e), embeddings=e, labelled_embeddings=lab,
                       cost=None if cost is None else np.asarray(cost, dtype=np.float64))


def test_l2_normalise_gives_unit_rows_and_keeps_a_zero_row_zero() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    assert l2_normalise(None, 5).shape == (0, 5)


# --- k-center greedy -------------------------------------------------------------------------------------------

# Labelled: the direction (1, 0). Distance = 1 - cos of the angle; lengths do not matter (c1 has length 3).
KC_LABELLED = [(1.0, 0.0)]
KC_CANDIDATES = [(10.0, 1.0),  # c0: ~6 deg from the labelled one: 1 - 10/sqrt(101) = 0.005
                 (0.0, 3.0),   # c1: 90 deg: 1
                 (-2.0, 0.0),  # c2: 180 deg: 2, the farthest
                 (-1.0, 1.0),  # c3: 135 deg: 1 + 1/sqrt2 = 1.71, second farthest, but 45 deg from c2
                 (1.0, -3.0),  # c4: -72 deg: 1 - 1/sqrt10 = 0.68
                 (1.0, -1.0)]  # c5: -45 deg: 1 - 1/sqrt2 = 0.29


def test_k_center_picks_the_farthest_then_covers_it() -> None:
    # Pick 1: c2 (distance 2). c3 is now 1 - 1/sqrt2 from c2, so pick 2 is c1 (90 deg from both: 1), and pick 3
    # is c4 (still 0.68 from the labelled one; 1 + 3/sqrt10 from c2 and 1 + 3/sqrt10 from c1). Plain "farthest
    # from the labelled set" would take c2, c3, c1: c3 duplicates c2's direction.
    scores, picks = k_center_greedy(np.array(KC_CANDIDATES), np.array(KC_LABELLED), 3)
    assert picks.tolist() == [2, 1, 4]
    assert top_k(k_center_greedy(np.array(KC_CANDIDATES), np.array(KC_LABELLED), 0)[0], 3).tolist() == [2, 3, 1]
    # Scores: the picks' distances when picked; the rest's to labelled + picks (c5: 1 - 4/sqrt20 from c4).
    np.testing.assert_allclose(scores, [1 - 10 / R101, 1.0, 2.0, 1 - 1 / R2, 1 - 1 / R10, 1 - 4 / R20], atol=1e-12)


def test_k_center_without_a_labelled_set_starts_from_the_mean_direction() -> None:
    # Unit-row mean of (1,0), (1,1), (1,-1), (-1,0) points along (1, 0): c3 (180 deg) is farthest (2). Then c1
    # and c2 tie at 1 - 1/sqrt2 from the mean and more from c3: the lower index, c1.
    cands = np.array([(1.0, 0.0), (1.0, 1.0), (1.0, -1.0), (-1.0, 0.0)])
    for labelled in (None, np.zeros((0, 2))):
        scores, picks = k_center_greedy(cands, labelled, 2)
        assert picks.tolist() == [3, 1]
        np.testing.assert_allclose(scores, [0.0, 1 - 1 / R2, 1 - 1 / R2, 2.0], atol=1e-12)


def test_k_center_strategy_reports_the_greedy_scores_and_orders_by_them() -> None:
    scores, chosen = get_strategy("k-center").select(inputs(KC_CANDIDATES, KC_LABELLED), 3)
    assert chosen.tolist() == [2, 1, 4]
    assert scores[chosen].tolist() == sorted(scores[chosen].tolist(), reverse=True)
    assert sorted(get_strategy("k-center").select(inputs(KC_CANDIDATES, KC_LABELLED), 10)[1]) == list(range(6))


# --- IDDS ------------------------------------------------------------------------------------------------------

# Three copies of A = (0, 1), two of B = (1, 0), one O = (-1, 0); cosines: A.A = B.B = 1, A.B = A.O = 0, B.O = -1.
A, B, O = (0.0, 1.0), (1.0, 0.0), (-1.0, 0.0)
IDDS_CANDIDATES = [A, A, A, B, B, O]


def test_idds_one_shot_scores_with_the_default_lambda() -> None:
    # Labelled: one A. Mean cos to the 5 other candidates: A 2/5, B 0, O -2/5; to the labelled set: A 1, else 0.
    # 0.67 * 2/5 - 0.33 * 1 = -0.062; B 0; O 0.67 * -2/5 = -0.268.
    scores = get_strategy("idds").score(inputs(IDDS_CANDIDATES, [A]))
    np.testing.assert_allclose(scores, [-0.062, -0.062, -0.062, 0.0, 0.0, -0.268], atol=1e-12)


def test_idds_is_greedy_each_pick_joins_the_labelled_set() -> None:
    # lambda 0.5, labelled {A}. Pick 1: B, c3 (score 0; c4 ties, lower index).
    # Then U = {A, A, A, B, O}, L = {A, B}: A .5 * 2/4 - .5 * 1/2 = 0; B .5 * -1/4 - .5 * 1/2 = -.375;
    # O .5 * -1/4 - .5 * -1/2 = .125 -> pick 2: O, c5.
    # Then U = {A, A, A, B}, L = {A, B, O}: A .5 * 2/3 - .5 * 1/3 = 1/6; B .5 * 0 - .5 * 0 = 0 -> pick 3: A, c0.
    # After the batch (U = {A, A, B}, L = {A, B, O, A}): A .5 * 1/2 - .5 * 2/4 = 0, B 0.
    scores, picks = idds(np.array(IDDS_CANDIDATES), np.array([A]), 3, lam=0.5)
    assert picks.tolist() == [3, 5, 0]
    np.testing.assert_allclose(scores, [1 / 6, 0.0, 0.0, 0.0, 0.0, 0.125], atol=1e-12)
    # One-shot top-3 would take both copies of B: scores A -.3, B 0, O -.2 -> c3, c4, c5.
    assert top_k(idds(np.array(IDDS_CANDIDATES), np.array([A]), 0, lam=0.5)[0], 3).tolist() == [3, 4, 5]


def test_idds_without_a_labelled_set_takes_the_most_typical() -> None:
    # No labelled set: the second term is 0. A's mean cos to the others is 2/5, the highest -> c0 (score .2).
    scores, picks = idds(np.array(IDDS_CANDIDATES), None, 1, lam=0.5)
    assert picks.tolist() == [0]
    np.testing.assert_allclose(scores, [0.2, -0.375, -0.375, 0.0, 0.0, -0.25], atol=1e-12)


def test_idds_lambda_comes_from_the_config() -> None:
    # lambda 0.5 (al.idds_lambda), labelled {A}: A .5 * 2/5 - .5 * 1 = -.3; B 0; O .5 * -2/5 = -.2.
    cfg = build_config({"al": {"strategy": "idds", "idds_lambda": 0.5}})
    scores = get_strategy("idds", idds_lambda=cfg.al.idds_lambda).score(inputs(IDDS_CANDIDATES, [A]))
    np.testing.assert_allclose(scores, [-0.3, -0.3, -0.3, 0.0, 0.0, -0.2], atol=1e-12)
    with pytest.raises(ConfigError, match="idds_lambda"):
        build_config({"al": {"idds_lambda": 1.5}})


def test_idds_strategy_lists_its_picks_highest_score_first() -> None:
    scores, chosen = get_strategy("idds").select(inputs(IDDS_CANDIDATES, [A]), 3)
    assert sorted(chosen.tolist()) == sorted(idds(np.array(IDDS_CANDIDATES), np.array([A]), 3)[1].tolist())
    assert chosen.tolist() == sorted(chosen.tolist(), key=lambda i: (-scores[i], i))


# --- the +diverse hybrid ---------------------------------------------------------------------------------------

# Three tight clusters around (1, 0), (0, 1) and (-1, -1); cluster X holds the three most uncertain candidates.
CLUSTERED = np.array([(1.0, 0.05), (0.05, 1.0), (-1.0, -0.9), (1.0, -0.05), (-0.05, 1.0), (-0.9, -1.0),
                      (1.0, 0.0), (0.0, 1.0), (-1.0, -1.0)])
CLUSTER = [0, 1, 2, 0, 1, 2, 0, 1, 2]
UNCERTAIN = np.array([0.9, 0.5, 0.2, 0.8, 0.4, 0.1, 0.7, 0.3, 0.0])


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_finds_the_obvious_clusters(seed: int) -> None:
    labels = kmeans(CLUSTERED, 3, np.random.default_rng(seed))
    # The same partition as CLUSTER, whatever the cluster numbers.
    assert len({(a, b) for a, b in zip(labels.tolist(), CLUSTER)}) == 3 == len(set(labels.tolist()))


@pytest.mark.parametrize("name", ["pe", "pe-dynamic", "entropy"])
@pytest.mark.parametrize("seed", range(3))
def test_diverse_takes_the_top_of_each_cluster_where_top_k_takes_one_cluster(name: str, seed: int) -> None:
    x = inputs(CLUSTERED, [(0.7, 0.7)], u_full=UNCERTAIN, seed=seed)
    assert get_strategy(name).select(x, 3)[1].tolist() == [0, 3, 6]  # all three from cluster X
    scores, chosen = get_strategy(f"{name}+diverse").select(x, 3)
    assert chosen.tolist() == [0, 1, 2]  # X's best .9, Y's .5, Z's .2, highest score first
    np.testing.assert_allclose(scores, get_strategy(name).score(x))  # scores.jsonl gets N's scores


def test_spread_tops_up_from_the_ranking_when_clusters_run_out() -> None:
    # Two clusters for k = 3: heads c0 (.9) and c3 (.5), then the best of the rest, c1 (.8).
    assert spread_by_cluster(np.array([0.9, 0.8, 0.1, 0.5]), np.array([0, 0, 1, 1]), 3).tolist() == [0, 1, 3]
    # More clusters than k: the k best heads.
    assert spread_by_cluster(np.array([0.1, 0.9, 0.5, 0.7]), np.array([0, 1, 2, 3]), 2).tolist() == [1, 3]
    # Only two distinct embeddings: k-means++ finds two centres, the third pick comes from the ranking.
    dup = np.array([(1.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 1.0)])
    assert diverse_top_k(np.array([0.9, 0.8, 0.1, 0.5]), dup, 3, np.random.default_rng(0)).tolist() == [0, 1, 3]
    # k >= n: every candidate, highest score first.
    assert diverse_top_k(np.array([0.1, 0.9]), dup[:2], 5, np.random.default_rng(0)).tolist() == [1, 0]


def test_diverse_is_deterministic_for_a_seed() -> None:
    data = np.random.default_rng(5)
    emb, u = data.normal(size=(60, 8)), data.random(60)
    runs = [get_strategy("pe-dynamic+diverse").select(inputs(emb, emb[:4], u_full=u, seed=s), 10)[1] for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert len(set(runs[0].tolist())) == 10
    np.testing.assert_array_equal(kmeans(emb, 10, np.random.default_rng(3)), kmeans(emb, 10, np.random.default_rng(3)))


def test_diverse_ranks_per_unit_of_cost_like_its_strategy() -> None:
    x = inputs(CLUSTERED, None, u_full=UNCERTAIN, cost=[1, 1, 1, 1, 1, 1, 1, 1, 100])
    scores, _ = get_strategy("pe+diverse").select(x, 3)
    np.testing.assert_allclose(scores, get_strategy("pe").select(x, 3)[0])


# --- the registry ----------------------------------------------------------------------------------------------


def test_every_uncertainty_strategy_has_a_diverse_twin_with_its_flags() -> None:
    uncertainty = [n for n, s in STRATEGIES.items() if s.measure is not None and not n.endswith("+diverse")]
    assert {"pe-dynamic", "entropy", "bald", "pe-spread-dynamic"} <= set(uncertainty)
    assert {n for n in STRATEGIES if n.endswith("+diverse")} == {f"{n}+diverse" for n in uncertainty}
    for name in uncertainty:
        inner, twin = get_strategy(name), get_strategy(f"{name}+diverse")
        assert twin.name == f"{name}+diverse" and twin.uses_embeddings
        for flag in ("measure", "base_measure", "uses_base", "uses_full"):
            assert getattr(twin, flag) == getattr(inner, flag), (name, flag)
    for name in ("k-center", "idds"):  # no uncertainty: the loop skips scoring for them
        s = get_strategy(name)
        assert s.uses_embeddings and s.measure is None and not s.uses_base and not s.uses_full


@pytest.mark.parametrize("name", ["k-center", "idds", "pe-dynamic+diverse"])
def test_a_diversity_strategy_without_embeddings_says_so(name: str) -> None:
    x = ScoreInputs(np.ones(4), np.ones(4), 0.5, np.random.default_rng(0), 4)
    with pytest.raises(ValueError, match=re.escape(f"strategy '{name}' needs the candidates' embeddings")):
        get_strategy(name).select(x, 2)


@pytest.mark.parametrize("name", ["k-center", "idds", "pe-dynamic+diverse", "entropy+diverse"])
def test_config_accepts_the_diversity_names(name: str) -> None:
    assert build_config({"al": {"strategy": name}}).al.strategy == name


def test_config_rejects_a_hybrid_of_random_and_checks_a_hybrids_measure() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'random\\+diverse'"):
        build_config({"al": {"strategy": "random+diverse"}})
    with pytest.raises(ConfigError, match="al.strategy=bald\\+diverse scores bald over al.response=options"):
        build_config({"al": {"strategy": "bald+diverse", "response": "generated"}})
