"""Comparison reports from run directories: accuracy, AULC, ECE and reliability per arm.

Runs are grouped into *arms*: the arm name recorded in a `star compare` grid (grid.yaml), else
the run's `al.strategy`. Every number is computed over an arm's finished runs (one per seed):

- mean +/- std over seeds, std the sample standard deviation (ddof=1; 0 for a single seed);
- normalised AULC of a run = trapezoid area under accuracy vs labels / (labels_last - labels_first),
  i.e. the mean accuracy over the labelling budget (a single round: its accuracy); per arm,
  mean +/- std of the runs' AULC;
- labels to reach random = labels of the first round whose mean accuracy is at least the random
  arm's final mean accuracy (the arm named "random", else the first arm whose runs all use
  al.strategy=random); "not reached" otherwise; absent when there is no random arm;
- reliability = the final round's bins of every run, pooled: counts summed, confidence and
  accuracy count-weighted; pooled ECE = sum_b n_b / N |acc_b - conf_b| over those bins;
- seconds per phase = mean over all (run, round) pairs of metrics.json's `seconds`.

A run with fewer finished rounds than `al.rounds` is unfinished: it is listed, and left out of
every number (so each arm's curve averages the same rounds over the same seeds).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from star.config import RunConfig, load_stored_config
from star.errors import ConfigError, RunStateError
from star.store.io import write_json
from star.store.runs import RunDir

GRID_FILE = "grid.yaml"
KNOBS = ("model.name", "task.name", "task.pool_size", "task.test_size", "al.score_subsample",
         "al.initial", "al.query", "al.rounds", "al.response")
EVALUATED = "n_test (evaluated)"
PHASES = ("score", "label", "train", "eval", "total")
FORMULAS = {
    "std": "sample standard deviation over seeds (ddof=1); 0 for a single seed",
    "aulc": "normalised AULC = trapezoid area under accuracy vs labels / (labels_last - labels_first)"
            " = mean accuracy over the labelling budget; per arm: mean and std of the runs' AULC",
    "labels_to_reach_random": "labels of the first round whose mean accuracy is at least the random arm's"
                              " final mean accuracy",
    "reliability": "final round of every finished run, pooled: counts summed, confidence and accuracy"
                   " count-weighted; pooled ECE = sum_b n_b / N |acc_b - conf_b|",
    "paired": "paired by seed: per seed that the arm and the reference arm (random, or --paired-with) both"
              " finished with the same labels per round (same initial labels, same test set), the arm's final"
              " accuracy (or AULC) minus the reference's; mean and std of those differences, and the seeds"
              " where the arm's final accuracy is higher / equal / lower",
    "seconds": "mean over all (run, round) pairs of metrics.json seconds",
    "unfinished": "runs with fewer finished rounds than al.rounds are listed and excluded from every number",
}
_REQUIRED = ("labels", "accuracy", "ece")
_EPS = 1e-12


@dataclass
class RunRecord:
    """One run directory as the report sees it: its arm, config and finished rounds' metrics."""

    path: Path
    arm: str
    config: RunConfig | None = None  # None: a grid cell never started
    metrics: list[dict[str, Any]] = field(default_factory=list)
    seed: int | None = None

    @property
    def finished(self) -> bool:
        """Whether every round of `al.rounds` has its metrics.json."""
        return self.config is not None and len(self.metrics) >= self.config.al.rounds

    @property
    def rounds_total(self) -> int | None:
        """Rounds the run was configured for."""
        return None if self.config is None else self.config.al.rounds


# --- finding runs ------------------------------------------------------------------------------

def load_record(path: str | os.PathLike[str], arm: str | None = None) -> RunRecord:
    """A run directory's config and finished metrics; arm defaults to its al.strategy."""
    run = RunDir.open(path)
    config = load_stored_config(run.config_path)
    try:
        metrics = run.metrics()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunStateError(f"a metrics.json in {run.path} is not valid JSON: {e}",
                            hint="delete that round's metrics.json and resume the run to redo the round") from e
    for t, m in enumerate(metrics):
        missing = [k for k in _REQUIRED if not isinstance(m.get(k), (int, float))]
        if missing:
            raise RunStateError(f"{run.metrics_path(t)} lacks numeric {', '.join(missing)}",
                                hint="delete it and resume the run to redo the round")
    return RunRecord(run.path, arm or config.al.strategy, config, metrics, config.seed)


def _read_grid(folder: Path) -> list[dict[str, Any]]:
    """The cells listed in folder/grid.yaml (arm, seed, path relative to the folder)."""
    path = folder / GRID_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RunStateError(f"grid file {path} is not valid YAML: {e}",
                            hint="restore it, or report the run folders one by one") from e
    cells = data.get("cells") if isinstance(data, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and {"arm", "path"} <= c.keys() for c in cells):
        raise RunStateError(f"grid file {path} has no valid 'cells' list (arm, seed, path)",
                            hint="restore it, or report the run folders one by one")
    return cells


def _grid_runs(folder: Path) -> list[RunRecord]:
    """Every cell of a `star compare` folder, started or not."""
    records = []
    for cell in _read_grid(folder):
        path = folder / str(cell["path"])
        arm = str(cell["arm"])
        if (path / "config.yaml").is_file():
            records.append(load_record(path, arm))
        else:
            records.append(RunRecord(path, arm, seed=cell.get("seed")))
    return records


def _grid_arm(run_path: Path) -> str | None:
    """The arm of a run dir that is a cell of a grid two levels up, if any."""
    folder = run_path.parent.parent
    if not (folder / GRID_FILE).is_file():
        return None
    for cell in _read_grid(folder):
        if (folder / str(cell["path"])).resolve() == run_path.resolve():
            return str(cell["arm"])
    return None


def _is_run_dir(path: Path) -> bool:
    """config.yaml plus a trace of a run (a round, labels or a log): not just any YAML file."""
    return (path / "config.yaml").is_file() and any(
        (path / name).exists() for name in ("round-0", "labels.sqlite", "log.txt"))


def _runs_under(root: Path) -> list[RunRecord]:
    """A grid folder's cells, a run dir itself, or every grid and run dir beneath `root`."""
    if (root / GRID_FILE).is_file():
        return _grid_runs(root)
    if (root / "config.yaml").is_file():
        return [load_record(root, _grid_arm(root))]
    grids = sorted(p.parent for p in root.rglob(GRID_FILE))
    records = [r for g in grids for r in _grid_runs(g)]
    for cfg in sorted(root.rglob("config.yaml")):
        if _is_run_dir(cfg.parent) and not any(g in cfg.parents for g in grids):
            records.append(load_record(cfg.parent))
    return records


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> list[RunRecord]:
    """Run records from run dirs and/or `star compare` folders (searched recursively), deduplicated."""
    records, seen = [], set()
    for raw in paths:
        root = Path(raw)
        if not root.is_dir():
            raise RunStateError(f"{root} is not a directory", hint="pass run directories or a `star compare` output folder")
        found = _runs_under(root)
        if not found:
            raise RunStateError(f"no star run directories (config.yaml) under {root}",
                                hint="pass the output_dir of `star run` or the --out folder of `star compare`")
        for rec in found:
            if rec.path.resolve() not in seen:
                seen.add(rec.path.resolve())
                records.append(rec)
    return records


# --- numbers -----------------------------------------------------------------------------------

def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample std (ddof=1; 0 for one value) of `values`."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def normalised_aulc(labels: Sequence[float], accuracy: Sequence[float]) -> float:
    """Trapezoid area under accuracy vs labels / label range (one round or no range: its accuracy)."""
    x, y = np.asarray(labels, dtype=np.float64), np.asarray(accuracy, dtype=np.float64)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError("labels and accuracy must be non-empty and of equal length")
    span = x[-1] - x[0]
    if len(x) == 1 or span == 0:
        return float(y.mean())
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / span)


def pool_reliability(bin_lists: Sequence[list[dict[str, float]]]) -> dict[str, Any] | None:
    """Reliability bins of several evaluations pooled (same binning required); None if they differ."""
    if not bin_lists or any(len(b) != len(bin_lists[0]) for b in bin_lists) or not bin_lists[0]:
        return None
    pooled = []
    for i, first in enumerate(bin_lists[0]):
        group = [bins[i] for bins in bin_lists]
        count = sum(int(b["count"]) for b in group)
        weighted = lambda key: sum(b["count"] * b[key] for b in group) / count if count else 0.0  # noqa: E731
        pooled.append({"lo": first["lo"], "hi": first["hi"], "count": count,
                       "confidence": float(weighted("confidence")), "accuracy": float(weighted("accuracy"))})
    total = sum(b["count"] for b in pooled)
    ece = sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in pooled) if total else 0.0
    return {"bins": pooled, "count": total, "ece": float(ece)}


def _mean_seconds(runs: Sequence[RunRecord]) -> dict[str, float]:
    """Mean seconds per phase over every (run, round), and the mean whole-run total."""
    out: dict[str, float] = {}
    for phase in PHASES:
        values = [m["seconds"][phase] for r in runs for m in r.metrics if phase in m.get("seconds", {})]
        if values:
            out[phase] = float(np.mean(values))
    totals = [sum(m.get("seconds", {}).get("total", 0.0) for m in r.metrics) for r in runs]
    out["run_total"] = float(np.mean(totals)) if totals else 0.0
    return out


def _round_stats(done: Sequence[RunRecord], n: int) -> list[dict[str, Any]]:
    """Per round t < n: labels (of the first run), accuracy and ECE mean +/- std over runs."""
    return [{"round": t, "labels": int(done[0].metrics[t]["labels"]),
             "accuracy": mean_std([r.metrics[t]["accuracy"] for r in done]),
             "ece": mean_std([r.metrics[t]["ece"] for r in done])} for t in range(n)]


def _run_aulc(rec: RunRecord, n: int) -> float:
    """Normalised AULC of one run's first n rounds."""
    return normalised_aulc([m["labels"] for m in rec.metrics[:n]], [m["accuracy"] for m in rec.metrics[:n]])


def _arm_summary(name: str, recs: Sequence[RunRecord]) -> dict[str, Any]:
    """Every number of one arm, over its finished runs."""
    done = [r for r in recs if r.finished]
    out: dict[str, Any] = {
        "name": name, "strategies": sorted({r.config.al.strategy for r in recs if r.config is not None}),
        "seeds": [r.seed for r in done], "n_runs": len(done), "n_unfinished": len(recs) - len(done),
        "rounds": [], "final_accuracy": None, "final_ece": None, "aulc": None, "seconds": {}, "reliability": None,
        "labels_to_reach_random": None, "reached_random": None,
    }
    if not done:
        return out
    n = min(len(r.metrics) for r in done)
    out["rounds"] = _round_stats(done, n)
    out["final_accuracy"], out["final_ece"] = out["rounds"][-1]["accuracy"], out["rounds"][-1]["ece"]
    out["aulc"] = mean_std([_run_aulc(r, n) for r in done])
    out["seconds"] = _mean_seconds(done)
    out["reliability"] = pool_reliability([r.metrics[n - 1].get("reliability") or [] for r in done])
    return out


def _random_arm(arms: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The reference arm: named 'random', else the first whose runs all use al.strategy=random."""
    ready = [a for a in arms if a["rounds"]]
    named = [a for a in ready if a["name"] == "random"]
    return (named or [a for a in ready if a["strategies"] == ["random"]] or [None])[0]


def _add_labels_to_reach(arms: Sequence[dict[str, Any]], reference: dict[str, Any] | None) -> None:
    """Set each arm's labels_to_reach_random (None: not reached) and reached_random."""
    if reference is None:
        return
    target = reference["final_accuracy"]["mean"]
    for arm in arms:
        if not arm["rounds"]:
            continue
        hit = next((r for r in arm["rounds"] if r["accuracy"]["mean"] >= target - _EPS), None)
        arm["reached_random"] = hit is not None
        arm["labels_to_reach_random"] = None if hit is None else hit["labels"]


def _paired(runs: Sequence[RunRecord], reference: Sequence[RunRecord]) -> dict[str, Any] | None:
    """Final accuracy and AULC minus the reference's, per seed both finished with the same labels per round."""
    ref = {r.seed: r for r in reference if r.finished}
    pairs = [(r, ref[r.seed]) for r in runs if r.finished and r.seed in ref]
    n = min((len(r.metrics) for pair in pairs for r in pair), default=0)
    pairs = [(a, b) for a, b in pairs if [m["labels"] for m in a.metrics[:n]] == [m["labels"] for m in b.metrics[:n]]]
    if not pairs:
        return None
    d_acc = [a.metrics[n - 1]["accuracy"] - b.metrics[n - 1]["accuracy"] for a, b in pairs]
    return {"seeds": [a.seed for a, _ in pairs], "final_accuracy": mean_std(d_acc),
            "aulc": mean_std([_run_aulc(a, n) - _run_aulc(b, n) for a, b in pairs]),
            "better": sum(d > _EPS for d in d_acc), "equal": sum(abs(d) <= _EPS for d in d_acc),
            "worse": sum(d < -_EPS for d in d_acc)}


def _add_paired(arms: Sequence[dict[str, Any]], groups: dict[str, list[RunRecord]],
                reference: dict[str, Any] | None) -> None:
    """Set each other arm's `paired` (None where it shares no finished seed with the reference arm)."""
    for arm in arms:
        arm["paired"] = None
        if reference is not None and arm is not reference and arm["rounds"]:
            arm["paired"] = _paired(groups[arm["name"]], groups[reference["name"]])


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'al': {'rounds': 3}} -> {'al.rounds': 3} (lists kept as values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _settings(rec: RunRecord) -> dict[str, Any]:
    """A run's flattened config (seed and output_dir dropped) plus the evaluated test-set size."""
    flat = _flatten(rec.config.model_dump(mode="json")) if rec.config is not None else {}
    flat.pop("seed", None)
    flat.pop("output_dir", None)
    flat[EVALUATED] = rec.metrics[-1].get("n_test") if rec.metrics else None
    return flat


def _differences(records: Sequence[RunRecord]) -> tuple[dict[str, list[Any]], dict[str, dict[str, list[Any]]]]:
    """Distinct values of each setting over `records`, and {setting: {arm: values}} where they differ."""
    values: dict[str, list[Any]] = {}
    by_arm: dict[str, dict[str, list[Any]]] = {}
    for rec in records:
        for key, value in _settings(rec).items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
            arm_values = by_arm.setdefault(key, {}).setdefault(rec.arm, [])
            if value not in arm_values:
                arm_values.append(value)
    return values, {k: by_arm[k] for k, v in values.items() if len(v) > 1}


def _paired_reference(arms: Sequence[dict[str, Any]], name: str | None,
                      random_arm: dict[str, Any] | None) -> dict[str, Any] | None:
    """The arm others are paired with: `name`, else the random arm; a ConfigError for an unknown name."""
    if name is None:
        return random_arm
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
    arms = [_arm_summary(name, recs) for name, recs in groups.items()]
    reference = _random_arm(arms)
    _add_labels_to_reach(arms, reference)
    paired_ref = _paired_reference(arms, paired_with, reference)
    _add_paired(arms, groups, paired_ref)
    basis = [r for r in records if r.finished] or [r for r in records if r.config is not None]
    values, differ = _differences(basis)
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


# --- rendering ---------------------------------------------------------------------------------

Block = tuple[Any, ...]  # ("h1"|"h2"|"p", text) | ("list", items) | ("table", headers, rows) | ("img", file, alt)


def _pm(stat: dict[str, float] | None, digits: int = 3, signed: bool = False) -> str:
    """'mean ± std' ('+' shown on a positive mean when signed), or '-' when absent."""
    if stat is None:
        return "-"
    return f"{stat['mean']:{'+' if signed else ''}.{digits}f} ± {stat['std']:.{digits}f}"


def _value(values: list[Any]) -> str:
    """Distinct setting values as text."""
    return ", ".join("null" if v is None else str(v) for v in values) or "-"


def _setup_blocks(s: dict[str, Any]) -> list[Block]:
    """Scaling knobs and the runs' other config differences."""
    rows = []
    for knob, values in s["knobs"].items():
        per_arm = s["knob_differences"].get(knob)
        note = "" if per_arm is None else "DIFFERS: " + "; ".join(f"{a}: {_value(v)}" for a, v in per_arm.items())
        rows.append([knob, _value(values), note])
    blocks: list[Block] = [("h2", "Setup (scaling knobs)"), ("table", ["setting", "value", "note"], rows)]
    if s["knob_differences"]:
        blocks.append(("p", "Warning: the runs differ in " + ", ".join(s["knob_differences"])
                       + "; their numbers are not directly comparable."))
    if s["config_differences"]:
        diff_rows = [[k, "; ".join(f"{a}: {_value(v)}" for a, v in per_arm.items())]
                     for k, per_arm in s["config_differences"].items()]
        blocks += [("p", "Other settings that differ between runs (the arms' ablations):"),
                   ("table", ["setting", "values per arm"], diff_rows)]
    return blocks


def _reach(arm: dict[str, Any], s: dict[str, Any]) -> str:
    """Labels to reach random as text: a count, 'not reached', or '-' without a random arm."""
    if s["random_arm"] is None or not arm["rounds"]:
        return "-"
    return "not reached" if arm["labels_to_reach_random"] is None else str(arm["labels_to_reach_random"])


def _summary_blocks(s: dict[str, Any]) -> list[Block]:
    """One row per arm: final accuracy, AULC, final ECE, labels to reach random, seconds."""
    target = "-" if s["random_arm"] is None else f"{s['random_final_accuracy']:.3f} ({s['random_arm']})"
    headers = ["arm", "strategy", "seeds", "final accuracy", "AULC", "final ECE", f"labels to reach random {target}",
               "score s", "label s", "train s", "eval s", "round s", "run s"]
    rows = []
    for a in s["arms"]:
        sec = [f"{a['seconds'][p]:.1f}" if p in a["seconds"] else "-" for p in (*PHASES, "run_total")]
        rows.append([a["name"], ", ".join(a["strategies"]), ", ".join(str(x) for x in a["seeds"]) or "-",
                     _pm(a["final_accuracy"]), _pm(a["aulc"]), _pm(a["final_ece"]), _reach(a, s), *sec])
    return [("h2", "Summary"), ("p", "mean ± std over seeds; seconds are means per round (run s: per run)."),
            ("table", headers, rows)]


def _paired_blocks(s: dict[str, Any]) -> list[Block]:
    """Each arm against the reference arm on the same seeds: mean ± std of the per-seed differences."""
    arms = [a for a in s["arms"] if a.get("paired")]
    if not arms:
        return []
    rows = [[a["name"], ", ".join(str(x) for x in a["paired"]["seeds"]), _pm(a["paired"]["final_accuracy"], signed=True),
             _pm(a["paired"]["aulc"], signed=True),
             f"{a['paired']['better']} / {a['paired']['equal']} / {a['paired']['worse']}"] for a in arms]
    return [("h2", f"Against {s['paired_with']}, paired by seed"),
            ("p", f"Per seed (same initial labels, same test set): the arm's number minus {s['paired_with']}'s;"
                  " mean ± std over the seeds both finished."),
            ("table", ["arm", "seeds", "Δ final accuracy", "Δ AULC", "seeds with higher / equal / lower final accuracy"],
             rows)]


def _round_blocks(s: dict[str, Any], key: str, title: str) -> list[Block]:
    """Rounds as rows, arms as columns: mean ± std of `key`."""
    arms = [a for a in s["arms"] if a["rounds"]]
    n = max((len(a["rounds"]) for a in arms), default=0)
    shared = all(len({a["rounds"][t]["labels"] for a in arms if t < len(a["rounds"])}) == 1 for t in range(n))
    rows = []
    for t in range(n):
        cells = []
        for a in arms:
            r = a["rounds"][t] if t < len(a["rounds"]) else None
            cells.append("-" if r is None else _pm(r[key]) + ("" if shared else f" @ {r['labels']}"))
        labels = str(next(a["rounds"][t]["labels"] for a in arms if t < len(a["rounds"]))) if shared else "per arm"
        rows.append([str(t), labels, *cells])
    return [("h2", title), ("table", ["round", "labels", *[a["name"] for a in arms]], rows)]


def _reliability_blocks(s: dict[str, Any]) -> list[Block]:
    """Pooled final-round reliability bins: accuracy / confidence (count) per arm."""
    arms = [a for a in s["arms"] if a["reliability"]]
    if not arms:
        return [("h2", "Reliability (final round, pooled over seeds)"), ("p", "No reliability bins recorded.")]
    rows = []
    for i, b in enumerate(arms[0]["reliability"]["bins"]):
        cells = []
        for a in arms:
            c = a["reliability"]["bins"][i] if i < len(a["reliability"]["bins"]) else None
            cells.append("-" if not c or not c["count"] else f"{c['accuracy']:.2f} / {c['confidence']:.2f} (n={c['count']})")
        rows.append([f"{b['lo']:.1f}-{b['hi']:.1f}", *cells])
    rows.append(["pooled ECE", *[f"{a['reliability']['ece']:.3f}" for a in arms]])
    return [("h2", "Reliability (final round, pooled over seeds)"),
            ("p", "Each cell: accuracy / mean confidence (test answers in the bin)."),
            ("table", ["confidence bin", *[a["name"] for a in arms]], rows)]


def _runs_blocks(s: dict[str, Any]) -> list[Block]:
    """Every run and its status; unfinished ones are excluded from the numbers."""
    rows = [[r["arm"], "-" if r["seed"] is None else str(r["seed"]), r["status"],
             f"{r['rounds_done']}/{r['rounds_total'] if r['rounds_total'] is not None else '?'}", r["path"]]
            for r in s["runs"]]
    bad = sum(r["status"] != "finished" for r in s["runs"])
    note = f"{bad} run(s) unfinished: listed here, excluded from every number." if bad else "All runs finished."
    return [("h2", "Runs"), ("p", note), ("table", ["arm", "seed", "status", "rounds", "path"], rows)]


def document(s: dict[str, Any]) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and HTML alike."""
    finished = sum(r["status"] == "finished" for r in s["runs"])
    blocks: list[Block] = [("h1", "STAR comparison report"),
                           ("p", f"{len(s['arms'])} arm(s), {finished} finished run(s) of {len(s['runs'])}.")]
    blocks += _setup_blocks(s) + _summary_blocks(s) + _paired_blocks(s)
    blocks += _round_blocks(s, "accuracy", "Accuracy per round") + _round_blocks(s, "ece", "ECE per round")
    blocks += _reliability_blocks(s) + _runs_blocks(s)
    blocks += [("h2", "Figures"), ("img", "learning_curve.png", "accuracy vs labels"),
               ("img", "ece_curve.png", "ECE vs labels"), ("img", "reliability.png", "reliability diagram"),
               ("h2", "Definitions"), ("list", [f"{k}: {v}" for k, v in s["formulas"].items()])]
    return blocks


def _md_escape(text: str, cell: bool = False) -> str:
    """Escape HTML-significant characters (and pipes in table cells) for Markdown."""
    out = html.escape(str(text), quote=False)
    return out.replace("|", "\\|") if cell else out


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown text of the blocks (every value escaped)."""
    lines: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + _md_escape(rest[0]), ""]
        elif kind == "p":
            lines += [_md_escape(rest[0]), ""]
        elif kind == "list":
            lines += [f"- {_md_escape(item)}" for item in rest[0]] + [""]
        elif kind == "table":
            headers, rows = rest
            lines.append("| " + " | ".join(_md_escape(h, True) for h in headers) + " |")
            lines.append("|" + "---|" * len(headers))
            lines += ["| " + " | ".join(_md_escape(c, True) for c in row) + " |" for row in rows] + [""]
        elif kind == "img":
            lines += [f"![{_md_escape(rest[1])}]({rest[0]})", ""]
    return "\n".join(lines)


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def render_html(blocks: Sequence[Block]) -> str:
    """A standalone HTML page of the blocks (every value escaped)."""
    e = lambda text: html.escape(str(text), quote=True)  # noqa: E731
    parts = ["<!doctype html>", "<html><head><meta charset=\"utf-8\"><title>STAR comparison report</title>",
             f"<style>{_CSS}</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in rest[0]) + "</ul>")
        elif kind == "table":
            headers, rows = rest
            head = "".join(f"<th>{e(h)}</th>" for h in headers)
            body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            parts.append(f"<p><img src=\"{e(rest[0])}\" alt=\"{e(rest[1])}\"></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# --- figures -----------------------------------------------------------------------------------

def _figure(width: float = 7.0, height: float = 4.5):  # noqa: ANN202
    """A matplotlib Figure on the Agg canvas (no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_curve(s: dict[str, Any], key: str, path: Path, ylabel: str) -> None:
    """`key` (accuracy or ece) vs labels: mean line and mean ± std band per arm."""
    fig = _figure()
    ax = fig.subplots()
    for arm in (a for a in s["arms"] if a["rounds"]):
        x = np.array([r["labels"] for r in arm["rounds"]], dtype=float)
        mean = np.array([r[key]["mean"] for r in arm["rounds"]])
        std = np.array([r[key]["std"] for r in arm["rounds"]])
        line, = ax.plot(x, mean, marker="o", label=f"{arm['name']} (n={arm['n_runs']})")
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if key == "accuracy" and s["random_final_accuracy"] is not None:
        ax.axhline(s["random_final_accuracy"], color="grey", linestyle=":", label="random, final")
    ax.set_xlabel("labels")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} vs labels (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_reliability(s: dict[str, Any], path: Path) -> None:
    """One reliability diagram per arm: pooled accuracy per confidence bin against the diagonal."""
    arms = [a for a in s["arms"] if a["reliability"]] or [None]
    cols = min(3, len(arms))
    rows = (len(arms) + cols - 1) // cols
    fig = _figure(4.0 * cols, 3.8 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, arm in zip(axes, arms):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        if arm is None:
            ax.set_title("no reliability bins recorded")
            continue
        bins = [b for b in arm["reliability"]["bins"] if b["count"]]
        ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins],
               width=[b["hi"] - b["lo"] for b in bins], edgecolor="black", alpha=0.6, label="accuracy")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="black", markersize=3,
                label="mean confidence")
        ax.set_title(f"{arm['name']}: ECE {arm['reliability']['ece']:.3f}", fontsize="medium")
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --- entry point -------------------------------------------------------------------------------

def write_report(runs: Sequence[str | os.PathLike[str] | RunRecord], out_dir: str | os.PathLike[str],
                 paired_with: str | None = None) -> Path:
    """Write report.{md,html,json} and the PNG figures into `out_dir`; returns that folder."""
    paths = [r for r in runs if not isinstance(r, RunRecord)]
    records = [r for r in runs if isinstance(r, RunRecord)] + (find_runs(paths) if paths else [])
    if not records:
        raise ConfigError("no runs to report", hint="pass run directories or a `star compare` output folder")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"report folder {out} exists and is not a directory", hint="choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(records, paired_with)
    blocks = document(summary)
    write_json(out / "report.json", summary)
    (out / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out / "report.html").write_text(render_html(blocks), encoding="utf-8")
    plot_curve(summary, "accuracy", out / "learning_curve.png", "accuracy")
    plot_curve(summary, "ece", out / "ece_curve.png", "ECE")
    plot_reliability(summary, out / "reliability.png")
    return out
