"""Annotation cost in real (tiny-model) runs: metrics.json's cost is the labels' answer lengths, a resume records
the same costs, a budget cuts round 0 short by its estimate, and the report draws accuracy against cost."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from star import loop
from star.al.cost import budget_prefix
from star.config import build_config
from star.experiments.report import write_report
from star.loop import rounds, selection
from star.store.io import read_jsonl
from star.store.labels import LabelStore
from star.tasks import build_task


class Crash(Exception):
    """Stands in for a kill."""


def _chars_config(tiny_run_config: dict, out: Path) -> dict:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["output_dir"] = str(out)
    cfg["al"]["cost"] = {"unit": "chars", "aware": True}  # ranked per estimated character too
    return cfg


def _answer_chars(run_dir: Path) -> tuple[list[int], list[int]]:
    """Characters of the committed answers per round, and cumulative."""
    store = LabelStore(run_dir / "labels.sqlite")
    try:
        last = max(lab.round for lab in store.all())
        per_round = [sum(len(lab.answer) for lab in store.in_round(t)) for t in range(last + 1)]
    finally:
        store.close()
    return per_round, list(np.cumsum(per_round))


def test_chars_run_records_its_labels_lengths_and_a_resume_the_same(tiny_run_config: dict, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen, estimates = [], []  # per round: the model's own answers the estimates came from (None: a fallback)
    estimate = selection.estimate_costs
    monkeypatch.setattr(selection, "estimate_costs", lambda exp, t, idx, answers: (
        seen.append(answers), estimates.append(estimate(exp, t, idx, answers)))[1] or estimates[-1])
    metrics = loop.run(_chars_config(tiny_run_config, tmp_path / "ref"), show_progress=False)
    assert seen[0] is None and [len(a) for a in seen[1:]] == [20, 16]  # every unlabelled example's answer
    monkeypatch.undo()
    per_round, total = _answer_chars(tmp_path / "ref")
    assert len(metrics) == 3 and all(n > 0 for n in per_round)
    assert [m["cost"] for m in metrics] == [{"round": float(r), "total": float(c), "unit": "chars"}
                                           for r, c in zip(per_round, total)]
    for t, est in enumerate(estimates):  # each candidate's estimate is in scores.jsonl, next to its score
        rows = read_jsonl(tmp_path / "ref" / f"round-{t}" / "scores.jsonl")
        assert [r["cost"] for r in rows] == [float(c) for c in est]

    calls = {"n": 0}
    original = rounds.train_adapter

    def crash_in_round_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Crash("killed while training model 2")
        return original(*args, **kwargs)

    cfg = _chars_config(tiny_run_config, tmp_path / "crashed")
    with monkeypatch.context() as m:
        m.setattr(rounds, "train_adapter", crash_in_round_2)
        with pytest.raises(Crash):
            loop.run(cfg, show_progress=False)
    resumed = loop.run(resume=cfg["output_dir"], show_progress=False)
    assert [m["cost"] for m in resumed] == [m["cost"] for m in metrics]

    out = write_report([tmp_path / "ref", tmp_path / "crashed"], tmp_path / "report")
    assert (out / "cost_curve.png").stat().st_size > 0
    assert "## Accuracy against annotation cost" in (out / "report.md").read_text()


def test_a_budget_cuts_round_0_to_the_prefix_its_estimate_fits(tiny_run_config: dict, tmp_path: Path) -> None:
    cfg = _chars_config(tiny_run_config, tmp_path / "budget")
    cfg["al"]["cost"]["aware"] = False
    # round 0 has no labels and no model answers: each candidate is estimated at the test set's mean answer length
    test = build_task(build_config(cfg).task).load("test")
    estimate = float(np.mean([len(e.answer) for e in test]))
    budget = 2.5 * estimate  # room for two of al.initial=4 by the estimate
    cfg["al"]["stop"] = {"rules": ["budget"], "budget": budget}
    metrics = loop.run(cfg, show_progress=False)
    assert budget_prefix([estimate] * 4, budget) == 2
    assert metrics[0]["acquired"] == 2  # fewer than al.initial: the round never overshoots by its own estimate
    per_round, _ = _answer_chars(tmp_path / "budget")
    assert metrics[0]["cost"]["total"] == per_round[0]  # the actual cost, honestly recorded (it may exceed the budget)
    assert metrics[0]["stop"]["rules"]["budget"]["value"] == metrics[0]["cost"]["total"]  # the rule reads that cost
