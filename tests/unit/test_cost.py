"""Annotation cost (al.cost): label costs per unit, estimates, cost-aware ranking, the budget's prefix, the report."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from star.al.cost import MIN_ESTIMATE, SCORE_EPS, budget_prefix, estimated_costs, label_costs, per_cost
from star.al.strategies import STRATEGIES, ScoreInputs, get_strategy
from star.config import build_config, dump_config
from star.errors import ConfigError, RunStateError
from star.experiments.document import document
from star.experiments.records import find_runs
from star.experiments.render import render_markdown
from star.experiments.report import write_report
from star.experiments.summary import summarise
from star.loop.cost import cost_metrics, estimate_costs, labels_cost, within_budget
from star.store.io import write_json
from star.store.labels import LabelStore
from star.tasks import Example, build_task
from star.tasks.base import Task

# Hand-written labels of two arithmetic examples and their lengths: characters of the answer as given, and
# tokens of the training target ('#### N' -> 'The final answer is N') by the fixture's byte-level tokenizer
# (one token per byte).
ANSWERS = ("#### 14", "3 + 4 = 7.\n#### 7")
CHARS = (7, 17)
TARGET_TOKENS = (len("The final answer is 14"), len("3 + 4 = 7.\nThe final answer is 7"))  # (22, 32)


# --- pure helpers ------------------------------------------------------------------------------


def test_label_costs_count_one_per_label_or_the_given_lengths() -> None:
    np.testing.assert_array_equal(label_costs("label", [7, 17]), [1.0, 1.0])
    np.testing.assert_array_equal(label_costs("chars", [7, 17]), [7.0, 17.0])
    np.testing.assert_array_equal(label_costs("tokens", [22, 32]), [22.0, 32.0])


def test_estimates_are_lengths_or_the_fallback_and_never_below_one() -> None:
    np.testing.assert_array_equal(estimated_costs("label", 3, [50, 60, 70], 9.0), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(estimated_costs("chars", 3, [50, 0, 7], 9.0), [50.0, MIN_ESTIMATE, 7.0])
    np.testing.assert_array_equal(estimated_costs("tokens", 2, None, 9.5), [9.5, 9.5])
    with pytest.raises(ValueError, match="needs 3 lengths"):
        estimated_costs("chars", 3, [1, 2], 1.0)


def test_cost_aware_ranking_prefers_a_cheap_slightly_less_uncertain_item() -> None:
    u_full = np.array([1.0, 0.9, 0.2])  # item 0 the most uncertain, item 1 nearly as uncertain
    cost = np.array([10.0, 2.0, 2.0])  # ... but item 0 costs five times as much to label
    pe = get_strategy("pe")
    plain = ScoreInputs(None, u_full, 0.0, np.random.default_rng(0), 3)
    aware = ScoreInputs(None, u_full, 0.0, np.random.default_rng(0), 3, cost=cost)
    assert pe.select(plain, 1)[1].tolist() == [0]
    scores, chosen = pe.select(aware, 3)
    # minmax(u_full) = [1, 0.875, 0]; (s + eps) / cost = [1.001 / 10, 0.876 / 2, 0.001 / 2]
    np.testing.assert_allclose(scores, [(1 + SCORE_EPS) / 10, (0.875 + SCORE_EPS) / 2, SCORE_EPS / 2])
    assert chosen.tolist() == [1, 0, 2]


def test_per_cost_makes_signed_scores_positive_and_breaks_zero_ties_by_cost() -> None:
    out = per_cost(np.array([-1.0, 1.0, -1.0]), np.array([4.0, 1.0, 2.0]))  # a subtract strategy's signed scores
    np.testing.assert_allclose(out, [SCORE_EPS / 4, 1 + SCORE_EPS, SCORE_EPS / 2])
    with pytest.raises(ValueError, match="positive cost"):
        per_cost(np.array([1.0, 2.0]), np.array([1.0, 0.0]))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_equal_costs_leave_every_strategys_ranking_unchanged(name: str) -> None:
    data = np.random.default_rng(3)
    u_base, u_full, emb, labelled = data.random(12), data.random(12), data.random((12, 4)), data.random((3, 4))

    def picks(cost: np.ndarray | None) -> list[int]:
        x = ScoreInputs(u_base, u_full, 0.4, np.random.default_rng(5), 12, emb, labelled, cost=cost)
        return get_strategy(name).select(x, 5)[1].tolist()

    assert picks(np.full(12, 7.0)) == picks(None)


@pytest.mark.parametrize(("remaining", "expected"), [(100.0, 3), (12.0, 3), (7.0, 2), (6.9, 1), (2.0, 1), (0.0, 0)])
def test_budget_prefix_takes_candidates_in_order_while_they_fit(remaining: float, expected: int) -> None:
    assert budget_prefix([3.0, 4.0, 5.0], remaining) == expected  # cumulative 3, 7, 12; at least one while > 0


def test_budget_prefix_is_a_prefix_not_the_cheapest_subset() -> None:
    assert budget_prefix([5.0, 1.0, 1.0], 4.0) == 1  # the first does not fit: it alone is taken, not the two 1s
    assert budget_prefix([1.0, 5.0, 1.0], 4.0) == 1  # stops at the first that does not fit
    assert budget_prefix([0.1, 0.2], 0.3) == 2  # float rounding of the cumulative sum does not drop one


# --- the loop's lengths and budget, on hand-written labels -------------------------------------


def _exp(tmp_path: Path, tokenizer, unit: str = "chars", al: dict | None = None, response: str = "generated"):
    """What star.loop.cost reads of an Experiment: config, task, tokenizer, pool, test set and label store."""
    task_cfg = {"name": "arithmetic", "pool_size": 24, "test_size": 6, "max_steps": 2}
    cfg = build_config({"task": task_cfg, "al": {"initial": 2, "query": 2, "rounds": 3, "response": response,
                                                 "cost": {"unit": unit}, **(al or {})}})
    task = build_task(cfg.task)
    pool = [Example(e.id, e.question, None, e.meta) for e in task.load("pool")]
    store = LabelStore(tmp_path / f"labels-{unit}.sqlite")
    return SimpleNamespace(config=cfg, task=task, pool=pool, test=task.load("test"), store=store,
                           model=SimpleNamespace(tokenizer=tokenizer))


@pytest.fixture
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize(("unit", "lengths"), [("label", (1, 1)), ("chars", CHARS), ("tokens", TARGET_TOKENS)])
def test_round_and_total_cost_of_hand_written_labels(tmp_path: Path, tokenizer, unit: str, lengths: tuple) -> None:
    exp = _exp(tmp_path, tokenizer, unit)
    exp.store.add(exp.pool[0].id, ANSWERS[0], "oracle", 0)
    exp.store.add(exp.pool[1].id, ANSWERS[1], "oracle", 1)
    assert cost_metrics(exp, 0) == {"round": lengths[0], "total": lengths[0], "unit": unit}
    assert cost_metrics(exp, 1) == {"round": lengths[1], "total": lengths[0] + lengths[1], "unit": unit}
    assert labels_cost(exp, exp.store.all()) == sum(lengths)


def test_estimates_never_read_the_pools_gold_answers(tmp_path: Path, tokenizer) -> None:
    exp = _exp(tmp_path, tokenizer, "chars")
    idx = [3, 4, 5]
    # the model's own answers from the scoring pass: their lengths (an empty one costs at least 1)
    np.testing.assert_array_equal(estimate_costs(exp, 1, idx, ["#### 5", "", "1 + 1 = 2.\n#### 2"]), [6, 1, 17])
    # no answers in round 0: the mean over the test set's answers, the labelled data the run evaluates on
    test_mean = np.mean([len(e.answer) for e in exp.test])
    np.testing.assert_allclose(estimate_costs(exp, 0, idx, None), [test_mean] * 3)
    # later rounds without answers (gold response, a strategy that does not score): the mean of the labels so far
    exp.store.add(exp.pool[0].id, ANSWERS[0], "oracle", 0)
    exp.store.add(exp.pool[1].id, ANSWERS[1], "oracle", 0)
    np.testing.assert_allclose(estimate_costs(exp, 1, idx, None), [12.0] * 3)  # (7 + 17) / 2
    tokens = _exp(tmp_path, tokenizer, "tokens")
    np.testing.assert_array_equal(estimate_costs(tokens, 1, [0, 1], ["#### 5", "ab"]), [6, 2])  # one token per byte
    assert estimate_costs(_exp(tmp_path, tokenizer, "label"), 1, idx, ["long answer"] * 3).tolist() == [1, 1, 1]


class _Options(Task):
    """A closed task's surface: its options as a labeller gives them, and their training targets."""

    name, answer_type, choices = "opts", "choice", ("yes", "no")

    def load(self, split: str) -> list[Example]:
        return []

    def target(self, answer: str) -> str:
        return f"The answer is {answer}"

    def extract(self, text: str) -> str | None:
        return text

    def gold_answer(self, answer: str) -> str:
        return answer


def test_options_tasks_estimate_the_mean_length_of_their_options(tokenizer) -> None:
    pool = [Example("a", "q?", None, {}), Example("b", "r?", None, {})]
    for unit, expected in (("chars", 2.5), ("tokens", (len("The answer is yes") + len("The answer is no")) / 2)):
        cfg = build_config({"al": {"response": "options", "cost": {"unit": unit}}})
        exp = SimpleNamespace(config=cfg, task=_Options(), pool=pool, test=[], store=None,
                              model=SimpleNamespace(tokenizer=tokenizer))
        np.testing.assert_allclose(estimate_costs(exp, 1, [0, 1], None), [expected, expected])


def test_within_budget_takes_the_prefix_that_fits_what_is_left(tmp_path: Path, tokenizer) -> None:
    stop = {"rules": ["budget"], "budget": 40}
    exp = _exp(tmp_path, tokenizer, "chars", {"stop": stop})
    exp.store.add(exp.pool[0].id, ANSWERS[0], "oracle", 0)
    exp.store.add(exp.pool[1].id, ANSWERS[1], "oracle", 0)  # round 0 spent 7 + 17 = 24 of 40: 16 left
    chosen, estimates = np.array([2, 0, 1]), np.array([9.0, 6.0, 8.0])  # in rank order: 8, 9, 6 -> 8, 17, 23
    assert within_budget(exp, 1, chosen, estimates).tolist() == [2]
    assert within_budget(exp, 0, chosen, estimates).tolist() == [2, 0, 1]  # round 0: all 40 left
    unenforced = _exp(tmp_path, tokenizer, "chars", {"stop": {**stop, "enforce": False}})
    assert within_budget(unenforced, 1, chosen, estimates).tolist() == [2, 0, 1]  # recorded only: never cut
    spent = _exp(tmp_path, tokenizer, "chars", {"stop": {**stop, "budget": 24}})
    with pytest.raises(RunStateError, match="no budget left"):
        within_budget(spent, 1, chosen, estimates)


def test_config_refuses_cost_aware_ranking_with_unit_label_and_unknown_units() -> None:
    with pytest.raises(ConfigError, match="al.cost.unit=chars or tokens"):
        build_config({"al": {"cost": {"aware": True}}})
    with pytest.raises(ConfigError, match="al.cost.unit"):
        build_config({"al": {"cost": {"unit": "words"}}})
    assert build_config({"al": {"cost": {"unit": "tokens", "aware": True}}}).al.cost.aware


@pytest.mark.parametrize("strategy", ["k-center", "idds"])
def test_config_refuses_cost_aware_ranking_for_distance_strategies(strategy: str) -> None:
    """k-center and IDDS have no score to divide by a cost: asking for it is an error, not silently ignored."""
    with pytest.raises(ConfigError, match=f"al.strategy={strategy} picks by distance"):
        build_config({"al": {"strategy": strategy, "cost": {"unit": "chars", "aware": True}}})
    hybrid = build_config({"al": {"strategy": "pe-dynamic+diverse", "cost": {"unit": "chars", "aware": True}}})
    assert hybrid.al.cost.aware


# --- the report --------------------------------------------------------------------------------


def _run(path: Path, strategy: str, seed: int, acc: list[float], cost: list[float] | None, unit: str = "chars") -> None:
    """A finished run dir: config.yaml and metrics.json per round, with "cost" (None: recorded before costs)."""
    cfg = build_config({"seed": seed, "output_dir": str(path), "task": {"pool_size": 40, "test_size": 10},
                        "al": {"initial": 4, "query": 4, "rounds": len(acc), "strategy": strategy}})
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    for t, a in enumerate(acc):
        m = {"round": t, "labels": 4 + 4 * t, "strategy": strategy, "accuracy": a, "ece": 0.1, "n_test": 10,
             "seconds": {"total": 1.0}, "reliability": []}
        if cost is not None:
            m["cost"] = {"round": cost[t] - (cost[t - 1] if t else 0.0), "total": cost[t], "unit": unit}
        write_json(path / f"round-{t}" / "metrics.json", m)


def test_report_shows_accuracy_against_cumulative_cost(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _run(root / "pe-0", "pe", 0, [0.2, 0.5], [40.0, 90.0])
    _run(root / "pe-1", "pe", 1, [0.4, 0.7], [60.0, 110.0])
    _run(root / "random-0", "random", 0, [0.3, 0.4], [50.0, 100.0])
    s = summarise(find_runs([root]))
    pe = next(a for a in s["arms"] if a["name"] == "pe")
    assert [r["cost"]["mean"] for r in pe["rounds"]] == [50.0, 100.0]
    assert pe["rounds"][0]["cost"]["std"] == pytest.approx(np.std([40, 60], ddof=1))
    assert pe["cost_units"] == ["chars"] and s["cost_units"] == ["chars"]
    assert next(r for r in s["runs"] if r["path"].endswith("pe-1"))["cost"] == [60.0, 110.0]
    md = render_markdown(document(s))
    assert "## Accuracy against annotation cost" in md
    assert "| 1 | 0.600 ± 0.141 @ 100.0 ± 14.1 chars | 0.400 ± 0.000 @ 100.0 ± 0.0 chars |" in md
    assert "100.0 ± 14.1 chars" in md.split("## Summary")[1].split("##")[0]  # the summary's cost column
    out = write_report([root], tmp_path / "report")
    assert (out / "cost_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![accuracy vs cumulative annotation cost](cost_curve.png)" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["cost_units"] == ["chars"]


def test_runs_recorded_before_costs_cost_their_labels_and_draw_no_cost_axis(tmp_path: Path) -> None:
    _run(tmp_path / "old", "pe", 0, [0.2, 0.5, 0.6], None)
    s = summarise(find_runs([tmp_path / "old"]))
    arm = s["arms"][0]
    assert [r["cost"]["mean"] for r in arm["rounds"]] == [4.0, 8.0, 12.0] and s["cost_units"] == ["label"]
    md = render_markdown(document(s))
    assert "Accuracy against annotation cost" not in md and "cost_curve.png" not in md
    assert "12.0 ± 0.0 label" in md  # the summary's cost column: labels
    out = write_report([tmp_path / "old"], tmp_path / "report")
    assert not (out / "cost_curve.png").exists()
