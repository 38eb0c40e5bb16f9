"""AUROC of a score at ranking positives (e.g. wrong answers) above negatives, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from star.al.ranking import auroc


def test_hand_computed_case_with_a_tie() -> None:
    # positives score 0.9, 0.4, 0.4; negatives 0.4, 0.1. The 6 (pos, neg) pairs:
    # 0.9>0.4, 0.9>0.1, 0.4=0.4 (half), 0.4>0.1, 0.4=0.4 (half), 0.4>0.1  ->  (4 + 2 * 0.5) / 6 = 5/6
    score = np.array([0.9, 0.4, 0.4, 0.4, 0.1])
    positive = np.array([True, True, True, False, False])
    assert auroc(score, positive) == pytest.approx(5 / 6)


def test_perfect_reversed_and_constant_rankings() -> None:
    positive = np.array([False, True, False, True])
    assert auroc(np.array([1.0, 3.0, 2.0, 4.0]), positive) == 1.0
    assert auroc(np.array([4.0, 1.0, 3.0, 2.0]), positive) == 0.0
    assert auroc(np.full(4, 7.0), positive) == 0.5


def test_matches_the_pairwise_definition_on_random_data() -> None:
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 200).astype(float)  # many ties
    positive = rng.random(200) < 0.3
    pos, neg = score[positive], score[~positive]
    pairwise = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(score, positive) == pytest.approx(pairwise, abs=1e-12)


def test_one_class_only_is_undefined_and_bad_input_is_refused() -> None:
    assert math.isnan(auroc(np.array([1.0, 2.0]), np.array([True, True])))
    assert math.isnan(auroc(np.array([]), np.array([], dtype=bool)))
    with pytest.raises(ValueError, match="one label per score"):
        auroc(np.array([1.0, 2.0]), np.array([True]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([1.0, float("nan")]), np.array([True, False]))
