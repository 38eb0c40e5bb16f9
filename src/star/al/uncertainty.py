"""Uncertainty arrays: PE and ME per example and MC pass, the label-free score over answer options, and the
disagreement between MC passes (BALD over options, the spread of PE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from star.errors import ConfigError

#: The total-uncertainty measure standing in for a disagreement measure where there is one pass (the base
#: model: nothing to drop out, so passes cannot disagree): BALD -> ME of the options, PE spread -> PE.
TOTAL_MEASURE = {"bald": "me", "pe-spread": "pe"}
#: The al.response values each disagreement measure is defined for.
DISAGREEMENT_RESPONSES = {"bald": ("options",), "pe-spread": ("generated", "gold")}


def entropy(probs: np.ndarray, axis: int) -> np.ndarray:
    """Shannon entropy (nats) of distributions along `axis`, with 0 log 0 = 0."""
    logs = np.log(np.where(probs > 0, probs, 1.0))
    return -(probs * logs).sum(axis=axis)


def bald(probs: np.ndarray) -> np.ndarray:
    """BALD (mutual information between the answer and the MC-dropout mask) from option probabilities (n, C, K):
    the entropy of the mean over passes minus the mean of each pass's entropy; >= 0, 0 when all passes agree."""
    total = entropy(probs.mean(axis=2), axis=1)  # (n,) H of the mean distribution (n, C)
    expected = entropy(probs, axis=1).mean(axis=1)  # (n,) mean over passes of H, from (n, K)
    value = np.maximum(total - expected, 0.0)  # (n,) rounding can leave +-1e-16 where the passes agree
    return np.where(_passes_agree(probs), 0.0, value)  # exactly 0 there: minmax must not rank rounding noise


def pe_spread(pe: np.ndarray) -> np.ndarray:
    """The standard deviation (population, ddof 0) over the K passes of PE (n, K) -> (n,): 0 for one pass."""
    return np.where(_passes_agree(pe), 0.0, pe.std(axis=1))  # (n,) exactly 0 where the passes agree


def _passes_agree(x: np.ndarray) -> np.ndarray:
    """(n,) whether every pass (the last axis) of example i equals its first, to the bit."""
    return (x == x[..., :1]).reshape(len(x), -1).all(axis=1)


@dataclass
class Uncertainty:
    """PE and ME per example and pass: (n, K) each; scored from answer options, also their probabilities."""

    pe: np.ndarray  # (n, K)
    me: np.ndarray  # (n, K)
    option_probs: np.ndarray | None = None  # (n, C, K) renormalised over the C options; None for free responses
    embeddings: np.ndarray | None = None  # (n, d) the prompts' embeddings, when the pass was asked to capture them
    answers: list[str] | None = None  # (n,) the greedy answers scored, where the pass generated them (al.cost)

    def mean(self, measure: str) -> np.ndarray:
        """(n,) the mean over passes of 'pe' or 'me'."""
        return getattr(self, measure).mean(axis=1)

    def value(self, measure: str) -> np.ndarray:
        """(n,) the named measure: 'pe' or 'me' (mean over passes), 'bald' (options only) or 'pe-spread'."""
        if measure == "bald":
            if self.option_probs is None:
                raise ConfigError("BALD needs the answer options' probabilities, and these scores have none",
                                  hint="score with al.response=options (a task with choices)")
            return bald(self.option_probs)
        if measure == "pe-spread":
            return pe_spread(self.pe)
        return self.mean(measure)


def option_uncertainty(option_logp: np.ndarray) -> Uncertainty:
    """Label-free uncertainty over a closed answer set from log p(option) of shape (n, C, K).

    The option probabilities are renormalised over the C options; ME is the entropy of that
    distribution and PE is -log of its largest probability (the model's own answer), per pass.
    """
    shifted = option_logp - option_logp.max(axis=1, keepdims=True)  # (n, C, K)
    log_norm = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (n, C, K)
    probs = np.exp(log_norm)  # (n, C, K)
    me = -(probs * log_norm).sum(axis=1)  # (n, K)
    pe = -log_norm.max(axis=1)  # (n, K)
    return Uncertainty(pe, me, probs)
