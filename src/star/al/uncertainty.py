"""Uncertainty arrays: PE and ME per example and MC pass, and the label-free score over answer options."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Uncertainty:
    """PE and ME per example and pass: (n, K) each."""

    pe: np.ndarray
    me: np.ndarray

    def mean(self, measure: str) -> np.ndarray:
        """(n,) the mean over passes of 'pe' or 'me'."""
        return getattr(self, measure).mean(axis=1)


def option_uncertainty(option_logp: np.ndarray) -> Uncertainty:
    """Label-free uncertainty over a closed answer set from log p(option) of shape (n, C, K).

    The option probabilities are renormalised over the C options; ME is the entropy of that
    distribution and PE is -log of its largest probability (the model's own answer), per pass.
    """
    shifted = option_logp - option_logp.max(axis=1, keepdims=True)  # (n, C, K)
    log_norm = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (n, C, K)
    probs = np.exp(log_norm)
    me = -(probs * log_norm).sum(axis=1)  # (n, K)
    pe = -log_norm.max(axis=1)  # (n, K)
    return Uncertainty(pe, me)
