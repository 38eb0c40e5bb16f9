"""The paired bootstrap (star.experiments.bootstrap) on constructed cases with known answers."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from star.experiments import bootstrap
from star.experiments.bootstrap import (
    Settings,
    difference_interval,
    first_reach,
    observed_means,
    reach_interval,
    replicate_means,
)
from star.experiments.statistics import aulc_weights, normalised_aulc

RNG = np.random.default_rng(123)


def _diff(values: list[np.ndarray], shared: bool = True, items: bool = True, **kw) -> dict:
    """Interval of feature 0 minus feature 1 of per-seed (2, N) values."""
    obs, reps = observed_means(values), replicate_means(values, shared, items, Settings(**kw))
    return difference_interval(obs[0] - obs[1], reps[:, 0] - reps[:, 1])


def test_a_constant_difference_on_every_item_and_seed_is_tight_and_separable() -> None:
    values = []
    for _ in range(3):
        ref = RNG.random(50)  # (N,) any per-item values
        values.append(np.vstack([ref + 0.2, ref]))  # (2, N): the arm is 0.2 above on every item of every seed
    d = _diff(values)
    assert d["estimate"] == pytest.approx(0.2)
    assert d["lo"] == pytest.approx(0.2, abs=1e-12) and d["hi"] == pytest.approx(0.2, abs=1e-12)
    assert d["separable"] and d["verdict"] == "separable at 95%"


def test_identical_arms_give_an_interval_of_zero_and_are_not_separable() -> None:
    values = [np.vstack([c, c]) for c in (RNG.integers(0, 2, 40) for _ in range(3))]  # (2, N) 0/1 correctness
    d = _diff(values)
    assert (d["estimate"], d["lo"], d["hi"]) == (0.0, 0.0, 0.0)
    assert not d["separable"] and d["verdict"] == "not separable"


def test_items_only_interval_matches_the_normal_approximation() -> None:
    # One seed, 4000 items: per-item difference +1 on 30%, -1 on 20%, 0 on 50%.
    # Mean 0.1, population variance 0.5 - 0.01 = 0.49, standard error 0.7 / sqrt(4000).
    n = 4000
    arm = np.r_[np.ones(1200), np.zeros(800), np.zeros(2000)]
    ref = np.r_[np.zeros(1200), np.ones(800), np.zeros(2000)]
    d = _diff([np.vstack([arm, ref])])
    half = 1.959964 * 0.7 / math.sqrt(n)
    assert d["estimate"] == pytest.approx(0.1)
    assert d["lo"] == pytest.approx(0.1 - half, abs=1e-3) and d["hi"] == pytest.approx(0.1 + half, abs=1e-3)


def test_seeds_only_interval_matches_the_normal_approximation() -> None:
    # 400 seeds, one value each (no items): per-seed differences 0 or 1, half each.
    seeds = [np.array([[float(s % 2)], [0.0]]) for s in range(400)]  # (2, 1) per seed
    d = _diff(seeds, shared=False, items=False)
    half = 1.959964 * 0.5 / math.sqrt(400)
    assert d["lo"] == pytest.approx(0.5 - half, abs=3e-3) and d["hi"] == pytest.approx(0.5 + half, abs=3e-3)


def test_shared_items_draw_once_for_every_seed_and_per_seed_sets_draw_each() -> None:
    # 8 seeds with identical values. One shared item draw keeps the seeds equal in every replicate, so
    # resampling seeds adds nothing: the width is one seed's. Independent draws per seed, with seed counts
    # c_s (multinomial), have variance sum E[c_s^2] / S^2 = (2S - 1) / S^2 of one draw's: width x sqrt(15/64).
    item = np.r_[np.ones(300), np.zeros(300)]
    values = [np.vstack([item, np.zeros(600)])] * 8
    width = {k: d["hi"] - d["lo"] for k, d in (("shared", _diff(values, shared=True)),
                                               ("per seed", _diff(values, shared=False)),
                                               ("one seed", _diff(values[:1], shared=True)))}
    assert width["shared"] == pytest.approx(width["one seed"], rel=0.05)
    assert width["per seed"] == pytest.approx(math.sqrt(15 / 64) * width["one seed"], rel=0.1)
    with pytest.raises(ValueError, match="same number of items"):
        replicate_means([np.zeros((2, 3)), np.zeros((2, 4))], shared_items=True)


def test_same_seed_same_interval_and_another_seed_another() -> None:
    values = [np.vstack([RNG.integers(0, 2, 30), RNG.integers(0, 2, 30)]).astype(float) for _ in range(3)]
    a, b = replicate_means(values, True), replicate_means(values, True)
    assert np.array_equal(a, b) and a.shape == (bootstrap.RESAMPLES, 2)
    assert not np.array_equal(a, replicate_means(values, True, settings=Settings(seed=1)))
    assert _diff(values) == _diff(values)


def test_labels_to_reach_is_the_first_round_at_or_above_the_target() -> None:
    labels = [4, 8, 12, 16]
    curves = np.array([[0.1, 0.3, 0.5, 0.6],   # reaches 0.3 at round 1 exactly
                       [0.1, 0.2, 0.25, 0.29],  # never reaches 0.3
                       [0.4, 0.1, 0.5, 0.6]])   # already at round 0
    assert first_reach(curves, np.full(3, 0.3), labels).tolist() == [8, math.inf, 4]
    samples = np.r_[np.full(90, 8.0), np.full(10, np.inf)]  # (B,) 10% of replicates never reach it
    r = reach_interval(8.0, samples)
    assert r == {"estimate": 8, "lo": 8, "hi": None, "reached_share": 0.9}
    assert reach_interval(math.inf, np.full(5, np.inf))["estimate"] is None


def test_aulc_weights_give_normalised_aulc() -> None:
    for labels in ([4, 8, 12], [16, 32, 64, 128], [10], [5, 5]):
        acc = RNG.random(len(labels))
        assert aulc_weights(labels) @ acc == pytest.approx(normalised_aulc(labels, acc))


def test_the_bootstrap_module_imports_numpy_and_the_standard_library_only() -> None:
    tree = ast.parse(Path(bootstrap.__file__).read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= {"__future__", "collections", "dataclasses", "numpy"}, names
