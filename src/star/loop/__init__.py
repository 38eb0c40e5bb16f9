"""The loop layer: the only place that wires engine, annotation, tracking, tasks and store together.

experiment (Experiment, setup: config, data, model, store), scoring (the pool's uncertainty and the
stored u_base), selection (candidates, ranking, the round's picks), rounds (label, train,
evaluate; `run`, resumable after any interruption).
"""

from star.loop.experiment import Experiment, load_live_adapter, setup
from star.loop.rounds import run, run_round, train_round
from star.loop.scoring import ensure_base_scores, pool_uncertainty
from star.loop.selection import select_round

__all__ = ["Experiment", "ensure_base_scores", "load_live_adapter", "pool_uncertainty", "run", "run_round", "select_round",
           "setup", "train_round"]
