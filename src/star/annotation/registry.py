"""Annotators by the name `al.annotator` takes; `config.ANNOTATOR_NAMES` lists the same names (a test pins them).

A factory gets the run's oracle (the simulation must be that one instance: the loop reads its
counters for the metrics) and returns the annotator; the annotator then gets a `RoundContext`.
"""

from __future__ import annotations

from collections.abc import Callable

from star.annotation.context import Annotator
from star.annotation.human import HumanAnnotator
from star.annotation.oracle import Oracle

#: Annotators by the name used in `al.annotator`; each factory gets the run's Oracle.
ANNOTATORS: dict[str, Callable[[Oracle], Annotator]] = {
    "oracle": lambda oracle: oracle,
    "human": lambda oracle: HumanAnnotator(),
}
