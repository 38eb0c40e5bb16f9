"""Experiment tracking: a run's config, rounds and figures sent to TensorBoard, MLflow or W&B.

Built on accelerate's tracker classes (accelerate.tracking); only the main process logs, and a
resumed run logs into the same tracker runs (session.py). `tracking.log_with` in the config
picks the trackers; their packages come with `pip install "star-al[tracking]"`.

    values.py    the config as flat hyperparameters, a round's metrics.json as flat scalars
    figures.py   the learning curve and the round's reliability diagram
    backends.py  one adapter per tracker around accelerate's class; the package check
    session.py   start / resume, each round sent once at step = round, finish
"""

from star.tracking.backends import BACKENDS, check_installed
from star.tracking.session import RunTracking, read_state, track_run

__all__ = ["BACKENDS", "RunTracking", "check_installed", "read_state", "track_run"]
