"""Runs read back from a committed report.json, so that a report can pair new runs with runs whose
folders are gone (another machine, an earlier session, a grid spread over several sessions).

A report written by this version keeps every run's config and per-round metrics.json, so its
runs come back exactly. A report written before that kept only labels, accuracy, cost and the
per-item correctness: its runs come back with those, a config rebuilt from the report's shared
knobs and the arm's differing settings (only those are compared with other runs: the rest of such a
config is defaults, not what the run did), and no ECE (None), which the report shows as "n/a".
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from star.config import RunConfig, build_config, with_stored_defaults
from star.errors import RunStateError
from star.experiments.items import ItemCorrectness, items_from_json
from star.experiments.records import RunRecord, find_runs

#: What a report.json must hold for its runs to be read back.
_NEEDED = ("runs", "items", "knobs", "config_differences")


def is_report_file(path: Path) -> bool:
    """Whether `path` names a report's JSON file (rather than a run or grid folder)."""
    return path.suffix == ".json" and path.is_file()


def _nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{'al.rounds': 3} -> {'al': {'rounds': 3}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _rebuilt_config(report: dict[str, Any], entry: dict[str, Any], source: str) -> tuple[RunConfig, frozenset[str]]:
    """An old report's run config (its single-valued knobs and its arm's differing settings over defaults)
    and the dotted settings it actually knows."""
    flat = {k: v[0] for k, v in report["knobs"].items() if "." in k and " " not in k and len(v) == 1}
    for key, per_arm in report["config_differences"].items():
        values = per_arm.get(entry["arm"]) or []
        if len(values) == 1:
            flat[key] = values[0]
    strategies = next((a.get("strategies") for a in report.get("arms", []) if a.get("name") == entry["arm"]), None)
    if strategies and len(strategies) == 1:  # the summary row's strategy, recorded even for a one-arm report
        flat.setdefault("al.strategy", strategies[0])
    data = with_stored_defaults({"al": {}, "train": {}, "eval": {}, "task": {}, **_nested(flat)})
    return build_config({**data, "seed": entry["seed"]}, source=source), frozenset(flat)


def _rebuilt_metrics(entry: dict[str, Any], unit: str, items: ItemCorrectness | None) -> list[dict[str, Any]]:
    """An old report's per-round metrics: labels, accuracy and cost; ECE unknown (None)."""
    n_test = None if items is None else len(items.ids)
    return [{"round": t, "labels": labels, "accuracy": acc, "ece": None, "n_test": n_test,
             "cost": {"unit": unit, "total": cost}}
            for t, (labels, acc, cost) in enumerate(zip(entry["labels"], entry["accuracy"], entry["cost"], strict=True))]


def _record(report: dict[str, Any], entry: dict[str, Any], items: dict[str, ItemCorrectness],
            path: Path) -> RunRecord:
    """One run entry of a report as the record `find_runs` would have read from its folder."""
    source = f"{path}, run {entry['path']}"
    first = entry.get("first_report") or entry.get("from_report")  # an earlier report it was read from
    first = None if first == str(path) else first
    run_items = items.get(entry["path"])
    if entry["status"] == "not started":
        return RunRecord(Path(entry["path"]), entry["arm"], seed=entry["seed"], from_report=str(path),
                         first_report=first)
    known: frozenset[str] | None = None
    if "config" in entry and "metrics" in entry:
        config = build_config(with_stored_defaults(entry["config"]), source=source)
        metrics = entry["metrics"]
    else:
        units = report.get("cost_units") or ["label"]
        config, known = _rebuilt_config(report, entry, source)
        metrics = _rebuilt_metrics(entry, units[0], run_items)
    missing = None if run_items is not None else "the stored report has no per-item data for this run"
    return RunRecord(Path(entry["path"]), entry["arm"], config, metrics, entry["seed"], run_items, missing,
                     entry.get("stopped_by"), from_report=str(path), first_report=first, known_settings=known)


def records_from_report(path: str | os.PathLike[str]) -> list[RunRecord]:
    """Every run of a report.json written by `star report`, as run records."""
    path = Path(path)
    hint = "pass a report.json written by `star report` (or the run folders themselves)"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunStateError(f"{path} is not valid JSON: {e}", hint=hint) from e
    if not isinstance(report, dict) or any(k not in report for k in _NEEDED):
        raise RunStateError(f"{path} is not a star report: it lacks one of {', '.join(_NEEDED)}", hint=hint)
    items = items_from_json(report["items"])
    try:
        return [_record(report, entry, items, path) for entry in report["runs"]]
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise RunStateError(f"{path} has a malformed run entry ({type(e).__name__}: {e})", hint=hint) from e


def gather_runs(paths: Sequence[str | os.PathLike[str]]) -> list[RunRecord]:
    """Run records from run dirs, `star compare` folders and report.json files, in the order given, each run
    once: a run in both a folder and a stored report (by its path) is read from the folder, which may have
    gone on since the report was written."""
    found = [records_from_report(raw) if is_report_file(Path(raw)) else find_runs([raw]) for raw in paths]
    in_folders = {rec.path.resolve() for recs in found for rec in recs if rec.from_report is None}
    records: list[RunRecord] = []
    seen: set[Path] = set()
    for rec in (r for recs in found for r in recs):
        key = rec.path.resolve()
        if key in seen or (rec.from_report is not None and key in in_folders):
            continue
        seen.add(key)
        records.append(rec)
    return records
