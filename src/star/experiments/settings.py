"""Configs as flat dotted settings ('al.rounds': 3): how `star compare` finds where a folder's grid or
run differs from the one asked for, and how a report finds the settings its runs share or differ in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from star.experiments.records import RunRecord

EVALUATED = "n_test (evaluated)"
#: Settings each run has its own of (a grid sets them per cell): not compared between runs.
PER_RUN = ("seed", "output_dir")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'al': {'rounds': 3}} -> {'al.rounds': 3} (lists kept as values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differing(a: Any, b: Any) -> list[str]:
    """The dotted settings whose values differ between two nested configs (absent counts as None), sorted."""
    flat_a, flat_b = flatten(a), flatten(b)
    return sorted(k for k in flat_a.keys() | flat_b.keys() if flat_a.get(k) != flat_b.get(k))


def run_settings(rec: RunRecord) -> dict[str, Any]:
    """A run's flattened config (PER_RUN settings dropped, and only its known settings where a stored
    report did not keep the whole config) plus the evaluated test-set size."""
    flat = flatten(rec.config.model_dump(mode="json")) if rec.config is not None else {}
    if rec.known_settings is not None:
        flat = {k: v for k, v in flat.items() if k in rec.known_settings}
    for key in PER_RUN:
        flat.pop(key, None)
    flat[EVALUATED] = rec.metrics[-1].get("n_test") if rec.metrics else None
    return flat


def setting_differences(
        records: Sequence[RunRecord]) -> tuple[dict[str, list[Any]], dict[str, dict[str, list[Any]]]]:
    """Distinct values of each setting over `records`, and {setting: {arm: values}} where they differ."""
    values: dict[str, list[Any]] = {}
    by_arm: dict[str, dict[str, list[Any]]] = {}
    for rec in records:
        for key, value in run_settings(rec).items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
            arm_values = by_arm.setdefault(key, {}).setdefault(rec.arm, [])
            if value not in arm_values:
                arm_values.append(value)
    return values, {k: by_arm[k] for k, v in values.items() if len(v) > 1}
