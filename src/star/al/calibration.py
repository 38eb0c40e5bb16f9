"""Calibration of the model's confidence in its own answers: ECE and reliability bins."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width bin of confidence: count, mean confidence, accuracy (empty bins kept)."""
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        out.append({
            "lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count,
            "confidence": float(confidence[mask].mean()) if count else 0.0,
            "accuracy": float(correct[mask].mean()) if count else 0.0,
        })
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE = sum_b (n_b / n) |acc_b - conf_b| over equal-width confidence bins."""
    return bins_ece(reliability_bins(confidence, correct, bins))


def bins_ece(bins: Sequence[Mapping[str, float]]) -> float:
    """ECE of reliability bins (count, confidence, accuracy each): sum_b (n_b / n) |acc_b - conf_b|, n the
    total count; 0 for no answers. Bins pooled over several evaluations give the ECE of all their answers."""
    total = sum(b["count"] for b in bins)
    if total == 0:
        return 0.0
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins))
