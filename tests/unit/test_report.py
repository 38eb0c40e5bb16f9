"""Report numbers recomputed by hand from a fixture of fake run directories (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from star.cli import main
from star.config import RunConfig, build_config, dump_config
from star.errors import RunStateError
from star.experiments.document import document
from star.experiments.records import find_runs
from star.experiments.render import render_markdown
from star.experiments.report import write_report
from star.experiments.statistics import normalised_aulc, pool_reliability
from star.experiments.summary import summarise
from star.store.io import write_json, write_jsonl

DEFAULT_SUBSAMPLE = RunConfig().al.score_subsample

S2 = math.sqrt(0.02)  # sample std (ddof=1) of {x, x + 0.2}: sqrt((0.1^2 + 0.1^2) / (2 - 1))


def make_run(path: Path, strategy: str, seed: int, acc: list[float], ece: list[float], rounds: int = 3,
             reliability: list[dict] | None = None, score_s: list[float] | None = None, n_test: int = 10,
             **task) -> Path:
    """A run dir: config.yaml plus round-<t>/metrics.json for each given accuracy."""
    cfg = build_config({"seed": seed, "output_dir": str(path), "task": {"pool_size": 40, "test_size": 10, **task},
                        "al": {"initial": 4, "query": 4, "rounds": rounds, "strategy": strategy}})
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    for t, (a, e) in enumerate(zip(acc, ece)):
        score = (score_s or [1.0] * len(acc))[t]
        write_json(path / f"round-{t}" / "metrics.json", {
            "round": t, "labels": 4 + 4 * t, "strategy": "random" if t == 0 else strategy, "accuracy": a, "ece": e,
            "n_test": n_test,
            "seconds": {"score": score, "label": 0.0, "train": 2.0, "eval": 3.0, "total": score + 5.0},
            "reliability": reliability if t == len(acc) - 1 and reliability else [],
        })
    return path


REL_A = [{"lo": 0.0, "hi": 0.5, "count": 2, "confidence": 0.3, "accuracy": 0.5},
         {"lo": 0.5, "hi": 1.0, "count": 8, "confidence": 0.8, "accuracy": 0.5}]
REL_B = [{"lo": 0.0, "hi": 0.5, "count": 6, "confidence": 0.2, "accuracy": 0.0},
         {"lo": 0.5, "hi": 1.0, "count": 4, "confidence": 0.9, "accuracy": 1.0}]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """random x 2 seeds (+1 unfinished), pe-dynamic x 2 seeds, entropy x 1 seed."""
    root = tmp_path / "runs"
    make_run(root / "random-0", "random", 0, [0.2, 0.4, 0.5], [0.3, 0.2, 0.1], reliability=REL_A, score_s=[1, 2, 3])
    make_run(root / "random-1", "random", 1, [0.4, 0.4, 0.7], [0.5, 0.2, 0.3], reliability=REL_B, score_s=[3, 4, 5])
    make_run(root / "random-2", "random", 2, [0.0, 0.0], [0.9, 0.9])  # unfinished: 2 of 3 rounds
    make_run(root / "pe-0", "pe-dynamic", 0, [0.2, 0.6, 0.8], [0.2, 0.2, 0.2])
    make_run(root / "pe-1", "pe-dynamic", 1, [0.4, 0.7, 0.9], [0.4, 0.2, 0.1])
    make_run(root / "ent-0", "entropy", 0, [0.1, 0.2, 0.3], [0.1, 0.1, 0.1])
    return root


def _arm(summary: dict, name: str) -> dict:
    return next(a for a in summary["arms"] if a["name"] == name)


def test_accuracy_and_ece_per_round_are_mean_and_sample_std(runs: Path) -> None:
    s = summarise(find_runs([runs]))
    rnd = _arm(s, "random")
    assert [r["labels"] for r in rnd["rounds"]] == [4, 8, 12]
    assert [r["accuracy"]["mean"] for r in rnd["rounds"]] == pytest.approx([0.3, 0.4, 0.6])
    assert [r["accuracy"]["std"] for r in rnd["rounds"]] == pytest.approx([S2, 0.0, S2])
    assert [r["ece"]["mean"] for r in rnd["rounds"]] == pytest.approx([0.4, 0.2, 0.2])
    assert [r["ece"]["std"] for r in rnd["rounds"]] == pytest.approx([S2, 0.0, S2])
    assert rnd["final_accuracy"] == pytest.approx({"mean": 0.6, "std": S2})
    assert _arm(s, "entropy")["final_accuracy"] == pytest.approx({"mean": 0.3, "std": 0.0})  # one seed: std 0


def test_aulc_is_trapezoid_area_over_label_range(runs: Path) -> None:
    # random seed 0: (4 * (0.2 + 0.4) / 2 + 4 * (0.4 + 0.5) / 2) / 8 = 0.375; seed 1: (1.6 + 2.2) / 8 = 0.475
    s = summarise(find_runs([runs]))
    assert _arm(s, "random")["aulc"] == pytest.approx({"mean": 0.425, "std": math.sqrt(2 * 0.05 ** 2)})
    assert normalised_aulc([4, 8, 12], [0.2, 0.4, 0.5]) == pytest.approx(0.375)
    assert normalised_aulc([16], [0.7]) == pytest.approx(0.7)
    assert normalised_aulc([0, 10, 40], [0.0, 1.0, 1.0]) == pytest.approx((5 + 30) / 40)


def test_labels_to_reach_random_final_accuracy(runs: Path) -> None:
    s = summarise(find_runs([runs]))
    assert s["random_arm"] == "random" and s["random_final_accuracy"] == pytest.approx(0.6)
    assert _arm(s, "pe-dynamic")["labels_to_reach_random"] == 8  # mean 0.65 at round 1
    assert _arm(s, "random")["labels_to_reach_random"] == 12
    ent = _arm(s, "entropy")
    assert ent["labels_to_reach_random"] is None and ent["reached_random"] is False


def test_no_random_arm_means_no_labels_to_reach(runs: Path) -> None:
    s = summarise(find_runs([runs / "pe-0", runs / "pe-1"]))
    assert s["random_arm"] is None and _arm(s, "pe-dynamic")["labels_to_reach_random"] is None


def test_reliability_is_pooled_over_seeds_from_the_final_round(runs: Path) -> None:
    rel = _arm(summarise(find_runs([runs])), "random")["reliability"]
    low, high = rel["bins"]
    assert low["count"] == 8 and high["count"] == 12 and rel["count"] == 20
    assert low["confidence"] == pytest.approx((2 * 0.3 + 6 * 0.2) / 8) and low["accuracy"] == pytest.approx(1 / 8)
    assert high["confidence"] == pytest.approx(10 / 12) and high["accuracy"] == pytest.approx(8 / 12)
    assert rel["ece"] == pytest.approx(8 / 20 * 0.1 + 12 / 20 * (10 / 12 - 8 / 12))
    assert pool_reliability([REL_A, REL_A[:1]]) is None  # different binnings are not pooled


def test_seconds_are_means_per_round_and_per_run(runs: Path) -> None:
    sec = _arm(summarise(find_runs([runs])), "random")["seconds"]
    assert sec["score"] == pytest.approx(3.0) and sec["train"] == pytest.approx(2.0)
    assert sec["total"] == pytest.approx(8.0) and sec["run_total"] == pytest.approx(24.0)  # (21 + 27) / 2


def test_unfinished_runs_are_listed_and_excluded(runs: Path) -> None:
    s = summarise(find_runs([runs]))
    rnd = _arm(s, "random")
    assert rnd["n_runs"] == 2 and rnd["n_unfinished"] == 1 and rnd["seeds"] == [0, 1]
    status = {Path(r["path"]).name: (r["status"], r["rounds_done"], r["rounds_total"]) for r in s["runs"]}
    assert status["random-2"] == ("unfinished", 2, 3) and status["random-0"] == ("finished", 3, 3)


def test_knobs_are_recorded_and_differences_flagged(runs: Path, tmp_path: Path) -> None:
    s = summarise(find_runs([runs]))
    assert s["knobs"]["al.score_subsample"] == [DEFAULT_SUBSAMPLE] and s["knobs"]["task.test_size"] == [10]
    assert s["knobs"]["n_test (evaluated)"] == [10] and s["knob_differences"] == {}
    assert set(s["config_differences"]["al.strategy"]) == {"random", "pe-dynamic", "entropy"}
    make_run(tmp_path / "other", "random", 5, [0.1, 0.2, 0.3], [0.1, 0.1, 0.1], test_size=20)
    s = summarise(find_runs([runs, tmp_path / "other"]))
    assert s["knob_differences"]["task.test_size"] == {"random": [10, 20], "pe-dynamic": [10], "entropy": [10]}


def test_files_are_written_and_html_escapes_arm_names(runs: Path, tmp_path: Path) -> None:
    grid = tmp_path / "grid"
    make_run(grid / "x" / "seed-0", "random", 0, [0.2, 0.4, 0.5], [0.3, 0.2, 0.1], reliability=REL_A)
    evil = "<script>alert(1)</script>"
    (grid / "grid.yaml").write_text(yaml.safe_dump({"cells": [{"arm": evil, "seed": 0, "path": "x/seed-0"},
                                                              {"arm": evil, "seed": 1, "path": "x/seed-1"}]}))
    out = write_report([grid, runs], tmp_path / "report")
    for name in ("report.md", "report.html", "report.json", "learning_curve.png", "ece_curve.png", "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("learning_curve.png", "ece_curve.png", "reliability.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page, md = (out / "report.html").read_text(), (out / "report.md").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in md
    data = json.loads((out / "report.json").read_text())
    assert next(a["name"] for a in data["arms"]) == evil
    assert any(r["status"] == "not started" for r in data["runs"])  # the grid's missing seed-1 cell
    assert "0.600 ± 0.141" in md and "not reached" in md and f"| al.score_subsample | {DEFAULT_SUBSAMPLE} |" in md


def test_run_dir_inside_a_grid_keeps_its_arm_name(tmp_path: Path) -> None:
    make_run(tmp_path / "g" / "no-decay" / "seed-0", "pe-dynamic", 0, [0.1, 0.2, 0.3], [0.1, 0.1, 0.1])
    (tmp_path / "g" / "grid.yaml").write_text(yaml.safe_dump({"cells": [{"arm": "no-decay", "seed": 0, "path": "no-decay/seed-0"}]}))
    assert [r.arm for r in find_runs([tmp_path / "g" / "no-decay" / "seed-0"])] == ["no-decay"]
    assert [r.arm for r in find_runs([tmp_path])] == ["no-decay"]


def test_cli_report_rebuilds_and_errors_are_clear(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.md").is_file()
    assert main(["report", str(tmp_path / "nothing-here")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunStateError, match="no star run directories"):
        find_runs([tmp_path / "empty"])
    assert main(["report", str(runs / "pe-0"), str(runs / "pe-1")]) == 2  # several DIRs need --out


def test_arms_are_compared_with_random_paired_by_seed(runs: Path, tmp_path: Path) -> None:
    s = summarise(find_runs([runs]))
    # pe-dynamic - random, final: seed 0 0.8 - 0.5, seed 1 0.9 - 0.7; AULC: 0.55 - 0.375, 0.675 - 0.475
    pe = _arm(s, "pe-dynamic")["paired"]
    assert pe["seeds"] == [0, 1] and (pe["better"], pe["equal"], pe["worse"]) == (2, 0, 0)
    assert pe["final_accuracy"] == pytest.approx({"mean": 0.25, "std": math.sqrt(2 * 0.05 ** 2)})
    assert pe["aulc"] == pytest.approx({"mean": 0.1875, "std": math.sqrt(2 * 0.0125 ** 2)})
    ent = _arm(s, "entropy")["paired"]  # one shared seed: 0.3 - 0.5
    assert ent["seeds"] == [0] and ent["final_accuracy"] == pytest.approx({"mean": -0.2, "std": 0.0})
    assert (ent["better"], ent["equal"], ent["worse"]) == (0, 0, 1)
    assert _arm(s, "random")["paired"] is None  # the reference itself; random-2 is unfinished, never paired
    make_run(tmp_path / "other" / "pe-5", "pe", 5, [0.1, 0.2, 0.3], [0.1, 0.1, 0.1])  # no seed shared with random
    s = summarise(find_runs([runs, tmp_path / "other"]))
    assert _arm(s, "pe")["paired"] is None
    text = render_markdown(document(s))
    assert "## Against random, paired by seed" in text
    assert "| pe-dynamic | 0, 1 | +0.250 ± 0.071 | +0.188 ± 0.018 | 2 / 0 / 0 |" in text
    assert "| entropy | 0 | -0.200 ± 0.000 |" in text


def test_paired_with_names_the_reference_arm(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    s = summarise(find_runs([runs]), paired_with="pe-dynamic")
    assert s["paired_with"] == "pe-dynamic" and _arm(s, "pe-dynamic")["paired"] is None
    rnd = _arm(s, "random")["paired"]  # random - pe-dynamic: 0.5 - 0.8, 0.7 - 0.9
    assert rnd["final_accuracy"] == pytest.approx({"mean": -0.25, "std": math.sqrt(2 * 0.05 ** 2)})
    assert s["random_arm"] == "random" and _arm(s, "entropy")["labels_to_reach_random"] is None  # unchanged
    assert "## Against pe-dynamic, paired by seed" in render_markdown(document(s))
    assert main(["report", str(runs), "--out", str(tmp_path / "r"), "--paired-with", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--paired-with 'nope' is not an arm" in err and "choose one of entropy, pe-dynamic, random" in err


# --- bootstrap intervals from per-item predictions ---------------------------------------------

N_ITEMS = 40


def make_item_run(path: Path, strategy: str, seed: int, correct: np.ndarray, ids: list[str] | None = None) -> Path:
    """A run dir whose round-t/predictions.jsonl hold `correct` (T, N) 0/1, and metrics.json their accuracy."""
    rounds, n = correct.shape
    ids = ids or [f"test-{i:03d}" for i in range(n)]
    make_run(path, strategy, seed, correct.mean(axis=1).tolist(), [0.1] * rounds, rounds=rounds, n_test=n,
             test_size=n)
    for t in range(rounds):
        rows = [{"id": i, "prediction": "x", "correct": bool(c), "confidence": 0.5} for i, c in zip(ids, correct[t])]
        write_jsonl(path / f"round-{t}" / "predictions.jsonl", rows)
    return path


def _better(correct: np.ndarray, k: int = 8) -> np.ndarray:
    """(T, N) `correct` plus k more correct items in every round: accuracy + k / N on every round."""
    out = correct.copy()
    for row in out:
        row[np.flatnonzero(row == 0)[:k]] = 1
    return out


@pytest.fixture
def item_runs(tmp_path: Path) -> Path:
    """random, pe (random + 8 of 40 items right in every round, every seed) and same (= random), seeds 0-2."""
    root, rng = tmp_path / "items", np.random.default_rng(7)
    for seed in range(3):
        base = (rng.random((3, N_ITEMS)) < [[0.3], [0.4], [0.5]]).astype(int)  # (T, N)
        make_item_run(root / f"random-{seed}", "random", seed, base)
        make_item_run(root / f"pe-{seed}", "pe", seed, _better(base))
        make_item_run(root / f"same-{seed}", "entropy", seed, base)
    return root


def _comparison(s: dict, arm: str, against: str = "random") -> dict:
    return next(c for c in s["comparisons"] if c["arm"] == arm and c["against"] == against)


def test_bootstrap_separates_a_better_arm_and_not_an_identical_one(item_runs: Path) -> None:
    s = summarise(find_runs([item_runs]))
    pe, same = _comparison(s, "pe"), _comparison(s, "entropy")
    assert pe["resampled"] == "seeds and test items (one test set)" and pe["test_items"] == [N_ITEMS] * 3
    assert pe["final_accuracy"]["estimate"] == pytest.approx(0.2) and pe["aulc"]["estimate"] == pytest.approx(0.2)
    assert 0 < pe["final_accuracy"]["lo"] < 0.2 < pe["final_accuracy"]["hi"] and pe["final_accuracy"]["separable"]
    assert pe["aulc"]["verdict"] == "separable at 95%"
    assert (same["final_accuracy"]["lo"], same["final_accuracy"]["hi"]) == (0.0, 0.0)
    assert same["final_accuracy"]["verdict"] == "not separable" and not same["aulc"]["separable"]
    for arm in s["arms"]:  # the interval's estimate is the report's labels-to-reach on these (all paired) seeds
        assert arm["labels_to_reach_random_interval"]["estimate"] == arm["labels_to_reach_random"]
    md = render_markdown(document(s))
    assert "## Bootstrap 95% intervals" in md and "10,000 bootstrap replicates" in md
    lo, hi = pe["final_accuracy"]["lo"], pe["final_accuracy"]["hi"]
    assert (f"| pe | random | 0, 1, 2 | seeds and test items (one test set) | +0.200 [{lo:+.3f}, {hi:+.3f}]"
            " | separable at 95% |") in md
    assert ("| entropy | random | 0, 1, 2 | seeds and test items (one test set) | +0.000 [+0.000, +0.000]"
            " | not separable |") in md


def test_report_json_holds_the_items_and_the_interval_can_be_recomputed(item_runs: Path, tmp_path: Path) -> None:
    from star.experiments.bootstrap import Settings, difference_interval, observed_means, replicate_means
    from star.experiments.items import items_from_json

    out = write_report([item_runs], tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    assert data["bootstrap"]["resamples"] == 10_000 and data["bootstrap"]["seed"] == 0
    assert data["items"]["test_sets"] == [[f"test-{i:03d}" for i in range(N_ITEMS)]]
    run = next(r for r in data["items"]["runs"] if r["path"].endswith("pe-1"))
    assert run["test_set"] == 0 and len(run["correct"]) == 3 and set("".join(run["correct"])) <= {"0", "1"}
    items, runs = items_from_json(data["items"]), {r["path"]: r for r in data["runs"]}
    values = []  # per seed: (2, N) pe and random final-round correctness, from report.json alone
    for seed in range(3):
        pe_path, rnd_path = (next(p for p in runs if p.endswith(f"{name}-{seed}")) for name in ("pe", "random"))
        values.append(np.vstack([items[pe_path].correct[-1], items[rnd_path].correct[-1]]).astype(float))
    b = data["bootstrap"]
    reps = replicate_means(values, True, True, Settings(b["resamples"], b["seed"], b["confidence"]))
    obs = observed_means(values)
    again = difference_interval(obs[0] - obs[1], reps[:, 0] - reps[:, 1], b["confidence"])
    assert again == pytest.approx(_comparison(data, "pe")["final_accuracy"])
    assert (out / "report.json").read_text() == write_report([item_runs], tmp_path / "rep2").joinpath(
        "report.json").read_text()  # deterministic: the same runs give the same intervals


def test_missing_or_inconsistent_predictions_fall_back_to_seeds_only(item_runs: Path) -> None:
    (item_runs / "pe-1" / "round-2" / "predictions.jsonl").unlink()
    bad = item_runs / "same-0" / "round-1" / "predictions.jsonl"
    bad.write_text(bad.read_text().replace('"correct": false', '"correct": true', 1))
    s = summarise(find_runs([item_runs]))
    pe, same = _comparison(s, "pe"), _comparison(s, "entropy")
    assert pe["resampled"] == "seeds only" and pe["why_seeds_only"].endswith("pe-1: no round-2/predictions.jsonl")
    assert pe["test_items"] is None and pe["final_accuracy"]["estimate"] == pytest.approx(0.2)
    assert pe["final_accuracy"]["lo"] == pytest.approx(0.2) and pe["final_accuracy"]["separable"]  # 0.2 on every seed
    assert "does not reproduce metrics.json accuracy" in same["why_seeds_only"]
    assert _arm(s, "random")["labels_to_reach_random_interval"]["resampled"].startswith("seeds and test items")
    md = render_markdown(document(s))
    assert "Seeds only where a run lacks complete per-item predictions" in md
    assert "| pe | random | 0, 1, 2 | seeds only |" in md
    missing = {Path(r["path"]).name: r["missing"] for r in s["items"]["runs"]}
    assert missing["pe-1"] == "no round-2/predictions.jsonl" and missing["pe-0"] is None


def test_old_runs_without_predictions_report_seeds_only(runs: Path) -> None:
    s = summarise(find_runs([runs]))
    pe, ent = _comparison(s, "pe-dynamic"), _comparison(s, "entropy")
    assert pe["resampled"] == "seeds only" and "no round-0/predictions.jsonl" in pe["why_seeds_only"]
    # Two seeds (+0.3, +0.2): every replicate is one of the seeds' values or their mean, each end a seed's value.
    assert (pe["final_accuracy"]["lo"], pe["final_accuracy"]["hi"]) == pytest.approx((0.2, 0.3))
    assert ent["final_accuracy"]["lo"] is None and ent["final_accuracy"]["verdict"].startswith("no interval")
    assert "-0.200 (no interval)" in render_markdown(document(s))


def test_test_sets_that_differ_between_seeds_are_resampled_per_seed(item_runs: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    other = [f"other-{i}" for i in range(30)]
    base = (rng.random((3, 30)) < 0.5).astype(int)
    make_item_run(tmp_path / "more" / "random-3", "random", 3, base, other)
    make_item_run(tmp_path / "more" / "pe-3", "pe", 3, _better(base), other)
    s = summarise(find_runs([item_runs, tmp_path / "more"]))
    pe = _comparison(s, "pe")
    assert pe["resampled"] == "seeds and test items (a test set per seed)" and pe["test_items"] == [40, 40, 40, 30]
    assert len(s["items"]["test_sets"]) == 2


def test_paired_with_adds_the_comparisons_against_that_arm(item_runs: Path) -> None:
    s = summarise(find_runs([item_runs]), paired_with="pe")
    assert [(c["arm"], c["against"]) for c in s["comparisons"]] == [
        ("pe", "random"), ("entropy", "random"), ("random", "pe"), ("entropy", "pe")]
    assert _comparison(s, "random", "pe")["final_accuracy"]["estimate"] == pytest.approx(-0.2)
    assert "| random | pe | 0, 1, 2 |" in render_markdown(document(s))
