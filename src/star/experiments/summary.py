"""The whole report as plain data (what report.json holds): the arms' numbers, the settings the
runs share or differ in, and every run's status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from star.errors import ConfigError
from star.experiments.records import RunRecord
from star.experiments.settings import EVALUATED, setting_differences
from star.experiments.statistics import FORMULAS, add_labels_to_reach, add_paired, arm_summary, random_arm

KNOBS = ("model.name", "task.name", "task.pool_size", "task.test_size", "al.score_subsample",
         "al.initial", "al.query", "al.rounds", "al.response")


def _paired_reference(arms: Sequence[dict[str, Any]], name: str | None,
                      random: dict[str, Any] | None) -> dict[str, Any] | None:
    """The arm others are paired with: `name`, else the random arm; a ConfigError for an unknown name."""
    if name is None:
        return random
    found = next((a for a in arms if a["name"] == name), None)
    if found is None:
        raise ConfigError(f"--paired-with {name!r} is not an arm of these runs",
                          hint="choose one of " + ", ".join(a["name"] for a in arms))
    return found


def summarise(records: Sequence[RunRecord], paired_with: str | None = None) -> dict[str, Any]:
    """The whole report as plain data (what report.json holds); `paired_with` names the arm of the
    paired-by-seed table (default: the random arm)."""
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(rec.arm, []).append(rec)
    arms = [arm_summary(name, recs) for name, recs in groups.items()]
    reference = random_arm(arms)
    add_labels_to_reach(arms, reference)
    paired_ref = _paired_reference(arms, paired_with, reference)
    add_paired(arms, groups, paired_ref)
    basis = [r for r in records if r.finished] or [r for r in records if r.config is not None]
    values, differ = setting_differences(basis)
    return {
        "formulas": FORMULAS,
        "knobs": {k: values.get(k, []) for k in (*KNOBS, EVALUATED)},
        "knob_differences": {k: v for k, v in differ.items() if k in (*KNOBS, EVALUATED)},
        "config_differences": {k: v for k, v in differ.items() if k not in (*KNOBS, EVALUATED)},
        "random_arm": None if reference is None else reference["name"],
        "random_final_accuracy": None if reference is None else reference["final_accuracy"]["mean"],
        "paired_with": None if paired_ref is None else paired_ref["name"],
        "arms": arms,
        "runs": [{"path": str(r.path), "arm": r.arm, "seed": r.seed, "rounds_done": len(r.metrics),
                  "rounds_total": r.rounds_total,
                  "status": "finished" if r.finished else ("not started" if r.config is None else "unfinished")}
                 for r in records],
    }

