"""Where each stopping rule would have stopped each run (al.stop), for the report: the first round at which the
rule held, as metrics.json recorded it, and that round's accuracy against the run's final round's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from star.experiments.records import RunRecord
from star.experiments.render import Block


def _rule_stop(metrics: Sequence[dict[str, Any]], rule: str) -> dict[str, Any]:
    """The first round at which `rule` held (None: never), its labels and accuracy, and minus the final accuracy."""
    final = metrics[-1]["accuracy"]
    hit = next((m for m in metrics if ((m.get("stop") or {}).get("rules") or {}).get(rule, {}).get("holds")), None)
    if hit is None:
        return {"round": None, "labels": None, "accuracy": None, "vs_final": None}
    return {"round": hit["round"], "labels": hit["labels"], "accuracy": hit["accuracy"],
            "vs_final": hit["accuracy"] - final}


def stop_entries(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One entry per finished run whose rounds recorded stopping rules: per rule where it would have stopped
    (an unfinished run's "final" round is not its last, so it is left out, as from every other number)."""
    out = []
    for r in records:
        if not r.finished or not r.metrics or not r.config.al.stop.rules:
            continue
        last = r.metrics[-1]
        out.append({"path": str(r.path), "arm": r.arm, "seed": r.seed, "enforce": r.config.al.stop.enforce,
                    "stopped_by": r.stopped_by, "final_round": last["round"], "final_accuracy": last["accuracy"],
                    "rules": {rule: _rule_stop(r.metrics, rule) for rule in r.config.al.stop.rules}})
    return out


def _text(value: Any, fmt: str = "") -> str:
    """A value as text; None as 'never'."""
    return "never" if value is None else format(value, fmt)


def stopping_blocks(s: dict[str, Any]) -> list[Block]:
    """The report's table of where each rule would have stopped each run (nothing when no run recorded rules)."""
    entries = s.get("stopping") or []
    if not entries:
        return []
    rows = []
    for e in entries:
        for rule, hit in e["rules"].items():
            rows.append([e["arm"], "-" if e["seed"] is None else str(e["seed"]), rule, _text(hit["round"]),
                         _text(hit["labels"]), _text(hit["accuracy"], ".3f"),
                         f"{e['final_accuracy']:.3f} (round {e['final_round']})", _text(hit["vs_final"], "+.3f"),
                         "yes" if e["stopped_by"] == rule else "-"])
    text = ("Per run and rule (al.stop): the first round at which the rule held, as recorded after every round, its"
            " labels and test accuracy, and that accuracy minus the run's final round's. A run stopped by a rule"
            " (al.stop.enforce) ends at that round, so its final round is the stop; with enforce=false every rule is"
            " only recorded and the run goes on. The accuracy rule reads the test set.")
    headers = ["arm", "seed", "rule", "holds first at round", "labels", "accuracy there", "final accuracy",
               "Δ vs final", "stopped the run"]
    return [("h2", "Stopping rules"), ("p", text), ("table", headers, rows)]
