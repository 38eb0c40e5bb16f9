"""The whole report as plain data (what report.json holds): the arms' numbers, the bootstrap
comparisons, the settings the runs share or differ in, every run's status, and the per-item test
correctness the bootstrap was computed from."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from star.errors import ConfigError
from star.experiments.bootstrap import DEFAULT, Settings
from star.experiments.intervals import add_intervals, describe
from star.experiments.items import items_json
from star.experiments.records import RunRecord
from star.experiments.settings import EVALUATED, setting_differences
from star.experiments.statistics import FORMULAS, add_labels_to_reach, add_paired, arm_summary, random_arm, total_cost
from star.experiments.stopping import stop_entries

KNOBS = ("model.name", "task.name", "task.pool_size", "task.test_size", "al.score_subsample",
         "al.initial", "al.query", "al.rounds", "al.response", "al.cost.unit")


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


def _run_entry(r: RunRecord) -> dict[str, Any]:
    """One run's status, labels, accuracy and cost per finished round, and (so that `star report` can
    read the run back from this file, `star.experiments.stored`) its config and every round's metrics."""
    status = "finished" if r.finished else ("not started" if r.config is None else "unfinished")
    entry = {"path": str(r.path), "arm": r.arm, "seed": r.seed, "rounds_done": len(r.metrics),
             "rounds_total": r.rounds_total, "status": status, "stopped_by": r.stopped_by,
             "labels": [m["labels"] for m in r.metrics], "accuracy": [m["accuracy"] for m in r.metrics],
             "cost": [total_cost(m) for m in r.metrics], "from_report": r.from_report,
             "first_report": r.first_report, "machines": r.machines}
    if r.config is not None and all(m.get("ece") is not None for m in r.metrics):
        entry |= {"config": r.config.model_dump(mode="json"), "metrics": list(r.metrics)}
    return entry


def summarise(records: Sequence[RunRecord], paired_with: str | None = None,
              settings: Settings = DEFAULT) -> dict[str, Any]:
    """The whole report as plain data (what report.json holds); `paired_with` names the arm of the
    paired-by-seed table (default: the random arm), which the bootstrap compares with besides random."""
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(rec.arm, []).append(rec)
    arms = [arm_summary(name, recs) for name, recs in groups.items()]
    reference = random_arm(arms)
    add_labels_to_reach(arms, reference)
    paired_ref = _paired_reference(arms, paired_with, reference)
    add_paired(arms, groups, paired_ref)
    comparisons = add_intervals(arms, groups, reference, paired_ref, settings)
    basis = [r for r in records if r.finished] or [r for r in records if r.config is not None]
    values, differ = setting_differences(basis)
    boot = describe(settings)
    return {
        "formulas": {**FORMULAS, "bootstrap": boot["in_words"], "separable": boot["separable"],
                     "labels_to_reach_interval": boot["labels_to_reach"]},
        "knobs": {k: values.get(k, []) for k in (*KNOBS, EVALUATED)},
        "knob_differences": {k: v for k, v in differ.items() if k in (*KNOBS, EVALUATED)},
        "config_differences": {k: v for k, v in differ.items() if k not in (*KNOBS, EVALUATED)},
        "random_arm": None if reference is None else reference["name"],
        "random_final_accuracy": None if reference is None else reference["final_accuracy"]["mean"],
        "paired_with": None if paired_ref is None else paired_ref["name"],
        "cost_units": sorted({u for a in arms for u in a["cost_units"]}),
        "arms": arms,
        "bootstrap": boot,
        "comparisons": comparisons,
        "stopping": stop_entries(records),
        "runs": [_run_entry(r) for r in records],
        "items": items_json([(str(r.path), r.items, r.items_missing or "no per-item data")
                             for r in records if r.config is not None]),
    }

