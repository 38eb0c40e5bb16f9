"""Stopping rules (star.al.stopping): Cohen's kappa against hand-computed tables, each rule on constructed
histories, the al.stop config checks, and the report's where-would-it-have-stopped table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from star.al.stopping import (
    AccuracyRule,
    BudgetRule,
    History,
    KappaRule,
    UncertaintyRule,
    Verdict,
    cohen_kappa,
    evaluate,
    first_holding,
)
from star.config import build_config
from star.errors import ConfigError


def _raters(table: dict[tuple[str | None, str | None], int]) -> tuple[list, list]:
    """Two label vectors whose agreement table is `table` ({(a's label, b's label): count})."""
    a, b = [], []
    for (x, y), count in table.items():
        a += [x] * count
        b += [y] * count
    return a, b


def test_kappa_textbook_2x2() -> None:
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15. p_o = 35/50 = 0.7;
    # p_e = (25/50)(30/50) + (25/50)(20/50) = 0.3 + 0.2 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    a, b = _raters({("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15})
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    assert cohen_kappa(b, a) == pytest.approx(0.4, abs=1e-12)  # symmetric


def test_kappa_3x3_with_no_answer_as_a_category() -> None:
    # Categories "1", "2", None. Table (rows a, columns b): 1->1: 1, 1->2: 1, 2->2: 2, None->None: 1, None->1: 1.
    # p_o = 4/6; marginals a = (2, 2, 2)/6, b = (2, 3, 1)/6; p_e = (4 + 6 + 2)/36 = 1/3;
    # kappa = (2/3 - 1/3) / (2/3) = 0.5.
    a = ["1", "1", "2", "2", None, None]
    b = ["1", "2", "2", "2", None, "1"]
    assert cohen_kappa(a, b) == pytest.approx(0.5, abs=1e-12)


def test_kappa_edge_cases() -> None:
    assert cohen_kappa(["7", "7", None], ["7", "7", None]) == 1.0
    assert cohen_kappa(["a"] * 4, ["a"] * 4) == 1.0  # chance agreement 1: defined as 1, as small-text
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)  # p_o 0, p_e 1/2
    with pytest.raises(ValueError, match="one length"):
        cohen_kappa(["a"], ["a", "b"])


def test_kappa_rule_averages_the_last_window_pairs() -> None:
    same, half = ["1", "2", "1", "2"], ["1", "2", "2", "1"]  # kappa(same, half) = (1/2 - 1/2) / (1 - 1/2) = 0
    rule = KappaRule(kappa=0.9, window=2)
    assert rule(History(predictions=[same, same])) == Verdict(None, False)  # 1 pair < window
    # pairs (same, half) = 0 and (half, half) = 1: mean 0.5 < 0.9
    assert rule(History(predictions=[same, half, half])) == Verdict(0.5, False)
    # only the last 2 pairs count: (half, half) = 1, (half, half) = 1
    assert rule(History(predictions=[same, half, half, half])) == Verdict(1.0, True)
    assert KappaRule(kappa=0.5, window=2)(History(predictions=[same, half, half])).holds  # >= holds


def test_uncertainty_accuracy_rules_read_the_latest_round() -> None:
    assert UncertaintyRule(0.4)(History(uncertainty=[0.9, 0.4])) == Verdict(0.4, True)  # <=
    assert UncertaintyRule(0.4)(History(uncertainty=[0.1, 0.41])) == Verdict(0.41, False)
    assert UncertaintyRule(0.4)(History()) == Verdict(None, False)
    assert AccuracyRule(0.5)(History(accuracy=[0.7, 0.5])) == Verdict(0.5, True)  # >=
    assert AccuracyRule(0.5)(History(accuracy=[0.7, 0.49])) == Verdict(0.49, False)


def test_budget_rule_stops_when_one_more_label_cannot_be_paid() -> None:
    rule = BudgetRule(budget=10)  # labels: 1 each
    assert rule(History(labels=[4, 8], cost=[4.0, 8.0])) == Verdict(8.0, False)  # 2 left: the next round takes 2
    assert rule(History(labels=[10], cost=[10.0])) == Verdict(10.0, True)  # spent
    assert BudgetRule(budget=10.5)(History(labels=[10], cost=[10.0])).holds  # 0.5 left < 1 label
    # chars: 300 for 10 labels = 30 a label
    chars = BudgetRule(budget=1000)
    assert chars(History(labels=[10], cost=[300.0])) == Verdict(300.0, False)  # 700 left
    assert chars(History(labels=[32], cost=[960.0])) == Verdict(960.0, False)  # 40 left >= 960/32 = 30 a label
    assert chars(History(labels=[32], cost=[976.0])) == Verdict(976.0, True)  # 24 left < 976/32 = 30.5 a label


def test_evaluate_in_rule_order_and_first_holding() -> None:
    h = History(accuracy=[0.8], labels=[8], cost=[8.0], uncertainty=[0.2])
    verdicts = evaluate([UncertaintyRule(0.1), AccuracyRule(0.5), BudgetRule(8)], h)
    assert list(verdicts) == ["uncertainty", "accuracy", "budget"]
    assert first_holding(verdicts) == "accuracy"  # the first in the configured order that holds
    assert first_holding(evaluate([UncertaintyRule(0.1)], h)) is None
    assert np.isclose(verdicts["uncertainty"].value, 0.2)


def test_stop_config_names_rules_and_thresholds() -> None:
    cfg = build_config(overrides=["al.stop.rules=kappa,budget", "al.stop.budget=40"])
    assert cfg.al.stop.rules == ["kappa", "budget"] and cfg.al.stop.needs_stop_set
    assert not build_config(overrides=["al.stop.rules=accuracy", "al.stop.accuracy=0.9"]).al.stop.needs_stop_set
    assert build_config().al.stop.rules == []
    with pytest.raises(ConfigError) as e:
        build_config(overrides=["al.stop.rules=[uncertainty, patience]"])
    assert "unknown stopping rule 'patience'" in e.value.message and "kappa, uncertainty, accuracy, budget" in e.value.message
    with pytest.raises(ConfigError) as e:
        build_config(overrides=["al.stop.rules=uncertainty,accuracy"])
    assert "needs al.stop.uncertainty" in e.value.message and "al.stop.uncertainty=0.5" in e.value.message
    assert "needs al.stop.accuracy" in e.value.message
    with pytest.raises(ConfigError, match="names a rule twice"):
        build_config(overrides=["al.stop.rules=[budget, budget]", "al.stop.budget=3"])


def test_report_table_of_where_each_rule_would_have_stopped(tmp_path: Path) -> None:
    from star.experiments.records import RunRecord
    from star.experiments.render import render_markdown
    from star.experiments.stopping import stop_entries, stopping_blocks

    cfg = build_config(overrides=["al.stop.rules=budget,accuracy", "al.stop.budget=100", "al.stop.accuracy=0.5",
                                  "al.stop.enforce=false", "al.rounds=3"])

    def stop(budget: bool, accuracy: bool) -> dict:
        return {"rules": {"budget": {"value": 1.0, "holds": budget}, "accuracy": {"value": 1.0, "holds": accuracy}},
                "stopped_by": None}

    metrics = [{"round": 0, "labels": 16, "accuracy": 0.25, "stop": stop(False, False)},
               {"round": 1, "labels": 32, "accuracy": 0.5, "stop": stop(False, True)},
               {"round": 2, "labels": 48, "accuracy": 0.625, "stop": stop(False, True)}]
    entries = stop_entries([RunRecord(tmp_path, "pe", cfg, metrics, seed=3)])
    assert entries[0]["rules"]["accuracy"] == {"round": 1, "labels": 32, "accuracy": 0.5, "vs_final": -0.125}
    assert entries[0]["rules"]["budget"] == {"round": None, "labels": None, "accuracy": None, "vs_final": None}
    text = render_markdown(stopping_blocks({"stopping": entries}))
    assert "## Stopping rules" in text
    assert "| pe | 3 | accuracy | 1 | 32 | 0.500 | 0.625 (round 2) | -0.125 | - |" in text
    assert "| pe | 3 | budget | never | never | never | 0.625 (round 2) | never | - |" in text
    assert stopping_blocks({"stopping": []}) == []  # no run recorded rules: no section
    unfinished = RunRecord(tmp_path / "u", "pe", cfg, metrics[:2], seed=4)  # 2 of 3 rounds: its "final" is not
    assert [e["seed"] for e in stop_entries([RunRecord(tmp_path, "pe", cfg, metrics, seed=3), unfinished])] == [3]
