"""What a comparison report says: its sections as blocks (headings, paragraphs, tables, images),
built from the summary; `star.experiments.render` turns them into Markdown or HTML."""

from __future__ import annotations

from typing import Any

from star.experiments.figures import figures, has_cost_axis
from star.experiments.render import Block
from star.experiments.statistics import PHASES
from star.experiments.stopping import stopping_blocks


def _pm(stat: dict[str, float] | None, digits: int = 3, signed: bool = False) -> str:
    """'mean ± std' ('+' shown on a positive mean when signed), '-' when absent, 'n/a' when not recorded
    (the ECE of runs read back from a report that predates per-run metrics)."""
    if stat is None:
        return "-"
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:{'+' if signed else ''}.{digits}f} ± {stat['std']:.{digits}f}"


def _value(values: list[Any]) -> str:
    """Distinct setting values as text."""
    return ", ".join("null" if v is None else str(v) for v in values) or "-"


def _per_arm(per_arm: dict[str, list[Any]]) -> str:
    """{arm: values} as 'arm: values; arm: values'."""
    return "; ".join(f"{a}: {_value(v)}" for a, v in per_arm.items())


def _setup_blocks(s: dict[str, Any]) -> list[Block]:
    """Scaling knobs and the runs' other config differences."""
    rows = []
    for knob, values in s["knobs"].items():
        per_arm = s["knob_differences"].get(knob)
        note = "" if per_arm is None else "DIFFERS: " + _per_arm(per_arm)
        rows.append([knob, _value(values), note])
    blocks: list[Block] = [("h2", "Setup (scaling knobs)"), ("table", ["setting", "value", "note"], rows)]
    if s["knob_differences"]:
        blocks.append(("p", "Warning: the runs differ in " + ", ".join(s["knob_differences"])
                       + "; their numbers are not directly comparable."))
    if s["config_differences"]:
        diff_rows = [[k, _per_arm(per_arm)] for k, per_arm in s["config_differences"].items()]
        blocks += [("p", "Other settings that differ between runs (the arms' ablations):"),
                   ("table", ["setting", "values per arm"], diff_rows)]
    return blocks


def _reach(arm: dict[str, Any], s: dict[str, Any]) -> str:
    """Labels to reach random as text: a count, 'not reached', or '-' without a random arm."""
    if s["random_arm"] is None or not arm["rounds"]:
        return "-"
    return "not reached" if arm["labels_to_reach_random"] is None else str(arm["labels_to_reach_random"])


def _cost(arm: dict[str, Any], stat: dict[str, float] | None = None) -> str:
    """An arm's cumulative annotation cost (default: the final round's) as 'mean ± std unit', or '-'."""
    stat = stat or arm["final_cost"]
    return "-" if stat is None else f"{_pm(stat, digits=1)} {', '.join(arm['cost_units'])}"


def _summary_blocks(s: dict[str, Any]) -> list[Block]:
    """One row per arm: final accuracy, AULC, final ECE, annotation cost, labels to reach random, seconds."""
    target = "-" if s["random_arm"] is None else f"{s['random_final_accuracy']:.3f} ({s['random_arm']})"
    headers = ["arm", "strategy", "seeds", "final accuracy", "AULC", "final ECE", "annotation cost",
               f"labels to reach random {target}", "score s", "label s", "train s", "eval s", "round s", "run s"]
    rows = []
    for a in s["arms"]:
        sec = [f"{a['seconds'][p]:.1f}" if p in a["seconds"] else "-" for p in (*PHASES, "run_total")]
        rows.append([a["name"], ", ".join(a["strategies"]), ", ".join(str(x) for x in a["seeds"]) or "-",
                     _pm(a["final_accuracy"]), _pm(a["aulc"]), _pm(a["final_ece"]), _cost(a), _reach(a, s), *sec])
    return [("h2", "Summary"), ("p", "mean ± std over seeds; seconds are means per round (run s: per run)."),
            ("table", headers, rows)]


def _paired_blocks(s: dict[str, Any]) -> list[Block]:
    """Each arm against the reference arm on the same seeds: mean ± std of the per-seed differences."""
    arms = [a for a in s["arms"] if a.get("paired")]
    if not arms:
        return []
    rows = [[a["name"], ", ".join(str(x) for x in a["paired"]["seeds"]),
             _pm(a["paired"]["final_accuracy"], signed=True), _pm(a["paired"]["aulc"], signed=True),
             f"{a['paired']['better']} / {a['paired']['equal']} / {a['paired']['worse']}"] for a in arms]
    headers = ["arm", "seeds", "Δ final accuracy", "Δ AULC", "seeds with higher / equal / lower final accuracy"]
    return [("h2", f"Against {s['paired_with']}, paired by seed"),
            ("p", (f"Per seed (same initial labels, same test set): the arm's number minus {s['paired_with']}'s;"
                   " mean ± std over the seeds both finished.")),
            ("table", headers, rows)]


def _ci(d: dict[str, Any], digits: int = 3) -> str:
    """'+0.050 [+0.010, +0.090]': a difference and its interval ('(no interval)' without one)."""
    est = f"{d['estimate']:+.{digits}f}"
    return f"{est} (no interval)" if d["lo"] is None else f"{est} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def _labels(value: int | None) -> str:
    """Labels as text; None is 'not reached'."""
    return "not reached" if value is None else str(value)


def _seeds_only_note(entries: list[dict[str, Any]]) -> list[Block]:
    """One paragraph giving why some intervals resample seeds only (each reason once)."""
    reasons = list(dict.fromkeys(e["why_seeds_only"] for e in entries if e["why_seeds_only"]))
    if not reasons:
        return []
    return [("p", "Seeds only where a run lacks complete per-item predictions (" + "; ".join(reasons) + "). With"
                  " 3 seeds or fewer such an interval is the range of the per-seed values, not a 95% interval.")]


def _comparison_blocks(s: dict[str, Any], level: str) -> list[Block]:
    """Each arm against random (and --paired-with): differences with intervals and verdicts."""
    comps = s["comparisons"]
    if not comps:
        return []
    rows = [[c["arm"], c["against"], ", ".join(str(x) for x in c["seeds"]), c["resampled"],
             _ci(c["final_accuracy"]), c["final_accuracy"]["verdict"], _ci(c["aulc"]), c["aulc"]["verdict"]]
            for c in comps]
    headers = ["arm", "against", "seeds", "resampled", f"Δ final accuracy [{level} CI]", "verdict",
               f"Δ AULC [{level} CI]", "verdict (AULC)"]
    return [("table", headers, rows)]


def _reach_interval_blocks(s: dict[str, Any], level: str) -> list[Block]:
    """Labels to reach random's final accuracy per arm, with its bootstrap interval."""
    arms = [a for a in s["arms"] if a.get("labels_to_reach_random_interval")]
    if not arms:
        return []
    rows = []
    for a in arms:
        r = a["labels_to_reach_random_interval"]
        span = "-" if r["lo"] is None and r["hi"] is None else f"[{_labels(r['lo'])}, {_labels(r['hi'])}]"
        rows.append([a["name"], ", ".join(str(x) for x in r["seeds"]), r["resampled"], _labels(r["estimate"]), span,
                     f"{r['reached_share']:.0%}"])
    headers = ["arm", "seeds", "resampled", f"labels to reach {s['random_arm']}'s final", f"{level} CI",
               "replicates reaching it"]
    text = (f"Labels to reach {s['random_arm']}'s final accuracy on the paired seeds: the first round reaching it,"
            " per replicate on the same draw.")
    return [("p", text), ("table", headers, rows)]


def _bootstrap_blocks(s: dict[str, Any]) -> list[Block]:
    """The bootstrap section: how it resamples, the comparisons, and labels to reach random."""
    if "bootstrap" not in s:
        return []
    boot, level = s["bootstrap"], f"{s['bootstrap']['confidence']:.0%}"
    body = _comparison_blocks(s, level) + _reach_interval_blocks(s, level)
    if not body:
        return []
    text = (f"Paired by seed: {boot['resamples']:,} bootstrap replicates (generator seed {boot['seed']}) resample"
            " the seeds with replacement and, within them, the test items with replacement (one draw for every"
            " seed when they share the test set, else one per seed), the same draw for both arms. Each interval is"
            f" the {level} percentile interval of the replicates; separable at {level}: the interval of the"
            " difference excludes 0.")
    entries = s["comparisons"] + [a["labels_to_reach_random_interval"] for a in s["arms"]
                                  if a.get("labels_to_reach_random_interval")]
    return [("h2", f"Bootstrap {level} intervals"), ("p", text), *body, *_seeds_only_note(entries)]


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


def _cost_blocks(s: dict[str, Any]) -> list[Block]:
    """Accuracy against cumulative annotation cost per round (when some run's unit is not labels)."""
    if not has_cost_axis(s):
        return []
    arms = [a for a in s["arms"] if a["rounds"]]
    n = max((len(a["rounds"]) for a in arms), default=0)
    rows = [[str(t), *[f"{_pm(a['rounds'][t]['accuracy'])} @ {_cost(a, a['rounds'][t]['cost'])}"
                       if t < len(a["rounds"]) else "-" for a in arms]] for t in range(n)]
    text = ("Each cell: accuracy @ cumulative annotation cost after the round (mean ± std over seeds, in"
            " al.cost.unit; runs recorded before costs existed cost one per label).")
    return [("h2", "Accuracy against annotation cost"), ("p", text), ("table", ["round", *[a["name"] for a in arms]], rows)]


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
            full = c and c["count"]
            cells.append(f"{c['accuracy']:.2f} / {c['confidence']:.2f} (n={c['count']})" if full else "-")
        rows.append([f"{b['lo']:.1f}-{b['hi']:.1f}", *cells])
    rows.append(["pooled ECE", *[f"{a['reliability']['ece']:.3f}" for a in arms]])
    return [("h2", "Reliability (final round, pooled over seeds)"),
            ("p", "Each cell: accuracy / mean confidence (test answers in the bin)."),
            ("table", ["confidence bin", *[a["name"] for a in arms]], rows)]


def _source(run: dict[str, Any]) -> str:
    """' (read from REPORT[, first stored in EARLIER])' for a run read back from a report.json; '' otherwise."""
    if not run.get("from_report"):
        return ""
    first = run.get("first_report")
    return f" (read from {run['from_report']}" + (f", first stored in {first})" if first else ")")


def _runs_blocks(s: dict[str, Any]) -> list[Block]:
    """Every run and its status; unfinished ones are excluded from the numbers."""
    rows = [[r["arm"], "-" if r["seed"] is None else str(r["seed"]),
             r["status"] + (f" (stopped early by {r['stopped_by']})" if r.get("stopped_by") else ""),
             f"{r['rounds_done']}/{r['rounds_total'] if r['rounds_total'] is not None else '?'}",
             "; ".join(r.get("machines") or ["not recorded"]),
             r["path"] + _source(r)]
            for r in s["runs"]]
    bad = sum(r["status"] != "finished" for r in s["runs"])
    note = f"{bad} run(s) unfinished: listed here, excluded from every number." if bad else "All runs finished."
    blocks: list[Block] = [("h2", "Runs"), ("p", note)]
    kinds = {k for r in s["runs"] if r["status"] == "finished" for k in r.get("machines") or [] if k != "not recorded"}
    if len(kinds) > 1:
        blocks.append(("p", f"The finished runs come from {len(kinds)} kinds of machine. A run in bf16"
                            " (train.precision or al.precision auto or bf16) gives the same bits only on one kind, so"
                            " pairing runs across kinds adds the machines' rounding to the seeds' noise."))
    if any(r.get("from_report") and "metrics" not in r for r in s["runs"]):
        blocks.append(("p", "Runs read from a report.json that predates per-run records have no ECE (n/a), and of"
                            " their settings only those that report recorded (its shared knobs and the arms'"
                            " differences) are known and compared; their accuracy is exact."))
    return blocks + [("table", ["arm", "seed", "status", "rounds", "machine", "path"], rows)]


def document(s: dict[str, Any]) -> list[Block]:
    """The report as a list of blocks, rendered to Markdown and HTML alike."""
    finished = sum(r["status"] == "finished" for r in s["runs"])
    blocks: list[Block] = [("h1", "STAR comparison report"),
                           ("p", f"{len(s['arms'])} arm(s), {finished} finished run(s) of {len(s['runs'])}.")]
    blocks += _setup_blocks(s) + _summary_blocks(s) + _paired_blocks(s)
    blocks += _bootstrap_blocks(s)
    blocks += _round_blocks(s, "accuracy", "Accuracy per round") + _round_blocks(s, "ece", "ECE per round")
    blocks += _cost_blocks(s)
    blocks += stopping_blocks(s)
    blocks += _reliability_blocks(s) + _runs_blocks(s)
    blocks += [("h2", "Figures"), *[("img", file, alt) for file, alt in figures(s)]]
    blocks += [("h2", "Definitions"), ("list", [f"{k}: {v}" for k, v in s["formulas"].items()])]
    return blocks

