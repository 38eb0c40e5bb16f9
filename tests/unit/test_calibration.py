"""ECE and reliability bins against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from star.al.calibration import bins_ece, expected_calibration_error, reliability_bins


def test_ece_hand_example() -> None:
    # Bins (10, equal width): {0.9, 0.9} conf .9 acc .5; {0.1} conf .1 acc 0; {0.6} conf .6 acc 1.
    # ECE = 2/4 * |.5 - .9| + 1/4 * |0 - .1| + 1/4 * |1 - .6| = .2 + .025 + .1 = .325
    ece = expected_calibration_error(np.array([0.9, 0.9, 0.1, 0.6]), np.array([1, 0, 0, 1]), bins=10)
    assert ece == pytest.approx(0.325, abs=1e-12)


def test_reliability_bins_hand_example() -> None:
    bins = reliability_bins(np.array([0.9, 0.9, 0.1, 0.6]), np.array([1, 0, 0, 1]), bins=10)
    assert len(bins) == 10
    for b, (lo, hi) in zip(bins, [(i / 10, (i + 1) / 10) for i in range(10)]):
        assert b["lo"] == pytest.approx(lo) and b["hi"] == pytest.approx(hi)
    counts = [b["count"] for b in bins]
    assert sum(counts) == 4
    full = [b for b in bins if b["count"]]
    assert [(b["count"], b["confidence"], b["accuracy"]) for b in full] == [
        (1, pytest.approx(0.1), pytest.approx(0.0)),
        (1, pytest.approx(0.6), pytest.approx(1.0)),
        (2, pytest.approx(0.9), pytest.approx(0.5)),
    ]
    for b in full:  # each value lies in its own bin's range (upper edge inclusive)
        assert b["lo"] - 1e-9 <= b["confidence"] <= b["hi"] + 1e-9
    assert all(b["confidence"] == 0.0 and b["accuracy"] == 0.0 for b in bins if not b["count"])


def test_reliability_bins_place_interior_values_by_equal_width() -> None:
    conf = np.array([0.05, 0.15, 0.15, 0.55, 0.95, 0.99])
    correct = np.array([0, 1, 0, 1, 1, 0])
    bins = reliability_bins(conf, correct, bins=10)
    assert [b["count"] for b in bins] == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]
    assert bins[1]["accuracy"] == pytest.approx(0.5)
    assert bins[9]["confidence"] == pytest.approx(0.97)
    assert bins[9]["accuracy"] == pytest.approx(0.5)


def test_extremes_land_in_the_first_and_last_bins() -> None:
    bins = reliability_bins(np.array([0.0, 1.0, -0.2, 1.3]), np.array([0, 1, 0, 1]), bins=4)
    assert [b["count"] for b in bins] == [2, 0, 0, 2]  # out-of-range confidences are clipped
    assert bins[0]["confidence"] == 0.0 and bins[3]["confidence"] == 1.0


@pytest.mark.parametrize("bins", [2, 10, 15])
def test_perfect_calibration_gives_zero(bins: int) -> None:
    # Within each bin the accuracy equals the confidence: all-right at 1.0, all-wrong at 0.0, and
    # a 0.75-confidence group that is right 3 times out of 4.
    conf = np.array([1.0, 1.0, 0.0, 0.0, 0.75, 0.75, 0.75, 0.75])
    correct = np.array([1, 1, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(conf, correct, bins) == pytest.approx(0.0, abs=1e-12)


def test_always_wrong_and_fully_confident_gives_one() -> None:
    assert expected_calibration_error(np.ones(5), np.zeros(5)) == pytest.approx(1.0)


def test_empty_input_gives_zero() -> None:
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0
    bins = reliability_bins(np.array([]), np.array([]), bins=5)
    assert len(bins) == 5 and all(b["count"] == 0 for b in bins)


def test_ece_is_bounded_and_accepts_lists() -> None:
    rng = np.random.default_rng(0)
    conf = rng.random(200)
    correct = (rng.random(200) < 0.5).astype(int)
    ece = expected_calibration_error(conf.tolist(), correct.tolist())
    assert 0.0 <= ece <= 1.0
    assert ece == pytest.approx(expected_calibration_error(conf, correct))


def test_bins_ece_hand_example() -> None:
    # 2 answers at conf .3 acc .5, 8 at conf .8 acc .5: ECE = .2 * .2 + .8 * .3 = .28
    bins = [{"lo": 0.0, "hi": 0.5, "count": 2, "confidence": 0.3, "accuracy": 0.5},
            {"lo": 0.5, "hi": 1.0, "count": 8, "confidence": 0.8, "accuracy": 0.5}]
    assert bins_ece(bins) == pytest.approx(0.28)
    assert bins_ece([{**b, "count": 0} for b in bins]) == 0.0 and bins_ece([]) == 0.0


def _weighted(a: dict, b: dict, key: str) -> float:
    """Count-weighted mean of two bins' `key`."""
    n = a["count"] + b["count"]
    return (a["count"] * a[key] + b["count"] * b[key]) / n if n else 0.0


def test_bins_ece_of_pooled_bins_is_the_ece_of_all_answers() -> None:
    rng = np.random.default_rng(1)
    conf, correct = rng.random(300), (rng.random(300) < 0.6).astype(int)
    assert bins_ece(reliability_bins(conf, correct)) == expected_calibration_error(conf, correct)
    halves = [reliability_bins(conf[:100], correct[:100]), reliability_bins(conf[100:], correct[100:])]
    pooled = [{"count": a["count"] + b["count"], "confidence": _weighted(a, b, "confidence"),
               "accuracy": _weighted(a, b, "accuracy")} for a, b in zip(*halves)]
    assert bins_ece(pooled) == pytest.approx(expected_calibration_error(conf, correct), abs=1e-12)
