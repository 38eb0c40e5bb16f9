"""Report numbers recomputed by hand from a fixture of fake run directories (no model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
from star.store.io import write_json

DEFAULT_SUBSAMPLE = RunConfig().al.score_subsample

S2 = math.sqrt(0.02)  # sample std (ddof=1) of {x, x + 0.2}: sqrt((0.1^2 + 0.1^2) / (2 - 1))


def make_run(path: Path, strategy: str, seed: int, acc: list[float], ece: list[float], rounds: int = 3,
             reliability: list[dict] | None = None, score_s: list[float] | None = None, **task) -> Path:
    """A run dir: config.yaml plus round-<t>/metrics.json for each given accuracy."""
    cfg = build_config({"seed": seed, "output_dir": str(path), "task": {"pool_size": 40, "test_size": 10, **task},
                        "al": {"initial": 4, "query": 4, "rounds": rounds, "strategy": strategy}})
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    for t, (a, e) in enumerate(zip(acc, ece)):
        score = (score_s or [1.0] * len(acc))[t]
        write_json(path / f"round-{t}" / "metrics.json", {
            "round": t, "labels": 4 + 4 * t, "strategy": "random" if t == 0 else strategy, "accuracy": a, "ece": e,
            "n_test": 10, "seconds": {"score": score, "label": 0.0, "train": 2.0, "eval": 3.0, "total": score + 5.0},
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
    assert [a["name"] for a in data["arms"]][0] == evil
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
