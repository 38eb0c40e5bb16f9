"""`star report` reading runs back from a committed report.json: exactly for reports that keep per-run
records, with accuracy and items but no ECE for older ones, deduplicated against run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_report import make_item_run

from star.cli import main
from star.errors import RunStateError
from star.experiments.document import document
from star.experiments.records import find_runs
from star.experiments.render import render_markdown
from star.experiments.report import write_report
from star.experiments.stored import gather_runs, records_from_report
from star.experiments.summary import summarise

N = 40


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """random and pe (8 more items right every round) x seeds 0-2, with per-item predictions."""
    root, rng = tmp_path / "grid", np.random.default_rng(3)
    for seed in range(3):
        base = (rng.random((3, N)) < [[0.3], [0.4], [0.5]]).astype(int)  # (T, N)
        better = base.copy()
        better[:, np.flatnonzero(base[-1] == 0)[:8]] = 1
        make_item_run(root / f"random-{seed}", "random", seed, base)
        make_item_run(root / f"pe-{seed}", "pe", seed, better)
    return root


def _numbers(s: dict) -> tuple:
    """What a report concludes: arms' curves and every comparison's interval."""
    arms = [(a["name"], a["seeds"], a["rounds"], a["aulc"], a["labels_to_reach_random"]) for a in s["arms"]]
    return arms, s["comparisons"]


def test_a_report_reads_back_to_the_same_numbers(grid: Path, tmp_path: Path) -> None:
    first = write_report([grid], tmp_path / "rep")
    again = summarise(records_from_report(first / "report.json"))
    assert _numbers(again) == _numbers(summarise(find_runs([grid])))
    assert again["config_differences"] == {"al.strategy": {"random": ["random"], "pe": ["pe"]}}
    assert all(r["from_report"] == str(first / "report.json") for r in again["runs"])


def test_a_stored_report_pairs_with_new_run_folders(grid: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    for seed in range(3):  # the random arm survives only in a committed report
        shutil.move(str(grid / f"random-{seed}"), old / f"random-{seed}")
    stored = write_report([old], tmp_path / "stored") / "report.json"
    shutil.rmtree(old)
    s = summarise(gather_runs([stored, grid]))
    pe = next(c for c in s["comparisons"] if c["arm"] == "pe")
    assert pe["seeds"] == [0, 1, 2] and pe["resampled"] == "seeds and test items (one test set)"
    assert pe["final_accuracy"]["estimate"] == pytest.approx(8 / N) and pe["final_accuracy"]["separable"]


@pytest.mark.parametrize("report_first", [False, True])
def test_a_run_given_twice_counts_once_and_from_its_folder(grid: Path, tmp_path: Path, report_first: bool) -> None:
    (grid / "pe-2" / "round-2" / "metrics.json").rename(tmp_path / "later.json")  # pe-2 unfinished when stored
    stored = write_report([grid], tmp_path / "rep") / "report.json"
    (tmp_path / "later.json").rename(grid / "pe-2" / "round-2" / "metrics.json")  # then it finished
    records = gather_runs([stored, grid] if report_first else [grid, stored])
    assert len(records) == 6 and not any(r.from_report for r in records)
    assert all(r.finished for r in records)


def test_an_old_report_without_per_run_records_keeps_accuracy_and_items_and_drops_ece(grid: Path,
                                                                                     tmp_path: Path) -> None:
    path = write_report([grid], tmp_path / "rep") / "report.json"
    data = json.loads(path.read_text())
    for run in data["runs"]:  # what report.json held before it kept per-run records
        del run["config"], run["metrics"], run["from_report"]
    path.write_text(json.dumps(data))
    s = summarise(records_from_report(path))
    assert _numbers(s)[1] == _numbers(summarise(find_runs([grid])))[1]  # the intervals: from accuracy and items
    rnd = next(a for a in s["arms"] if a["name"] == "random")
    assert rnd["final_ece"] == {"mean": None, "std": None} and rnd["reliability"] is None
    md = render_markdown(document(s))
    assert "| n/a |" in md and "predates per-run records have no ECE" in md
    assert "pe" in s["config_differences"]["al.strategy"]
    rewritten = write_report([path], tmp_path / "again") / "report.json"  # still legacy: nothing invented
    assert all("metrics" not in r for r in json.loads(rewritten.read_text())["runs"])


def test_settings_an_old_report_did_not_record_are_not_compared(grid: Path, tmp_path: Path) -> None:
    """An old report's runs get defaults (and STORED_LEGACY's fp32) for what it did not record; those must not
    show as differences from new runs (they read 'train.precision: fp32' for runs that trained in bf16)."""
    old = tmp_path / "old"
    for seed in range(3):
        shutil.move(str(grid / f"random-{seed}"), old / f"random-{seed}")
    path = write_report([old], tmp_path / "stored") / "report.json"
    data = json.loads(path.read_text())
    for run in data["runs"]:
        del run["config"], run["metrics"], run["from_report"]
    path.write_text(json.dumps(data))
    shutil.rmtree(old)
    records = gather_runs([path, grid])
    rebuilt = next(r for r in records if r.arm == "random")
    assert rebuilt.config.train.precision == "fp32" and rebuilt.known_settings is not None
    assert next(r for r in records if r.arm == "pe").config.train.precision == "auto"
    s = summarise(records)
    assert s["config_differences"] == {"al.strategy": {"random": ["random"], "pe": ["pe"]}}
    assert "only those that report recorded" in render_markdown(document(s))


def test_a_run_read_back_over_several_reports_keeps_the_report_that_first_stored_it(grid: Path,
                                                                                     tmp_path: Path) -> None:
    first = write_report([grid], tmp_path / "a") / "report.json"
    second = write_report([first], tmp_path / "b") / "report.json"
    third = write_report([second], tmp_path / "c") / "report.json"
    runs = summarise(records_from_report(third))["runs"]
    assert {(r["from_report"], r["first_report"]) for r in runs} == {(str(third), str(first))}
    md = render_markdown(document(summarise(records_from_report(second))))
    assert f"(read from {second}, first stored in {first})" in md
    again = write_report([first], tmp_path / "a") / "report.json"  # a report re-written from its own file
    assert {r["first_report"] for r in json.loads(again.read_text())["runs"]} == {None}
    again = write_report([again], tmp_path / "a") / "report.json"  # its runs now name this very file as their source
    assert {r["first_report"] for r in json.loads(again.read_text())["runs"]} == {None}
    assert _numbers(summarise(records_from_report(third))) == _numbers(summarise(find_runs([grid])))


@pytest.mark.parametrize("text, message", [("{not json", "is not valid JSON"),
                                           ('{"runs": []}', "is not a star report")])
def test_a_bad_report_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "report.json"
    bad.write_text(text)
    with pytest.raises(RunStateError, match=message) as err:
        records_from_report(bad)
    assert str(bad) in str(err.value)


def test_star_report_accepts_a_report_json(grid: Path, tmp_path: Path) -> None:
    stored = write_report([grid], tmp_path / "rep") / "report.json"
    assert main(["report", str(stored), "--out", str(tmp_path / "out")]) in (0, None)
    assert "## Bootstrap 95% intervals" in (tmp_path / "out" / "report.md").read_text()


def test_one_paired_seed_gives_an_interval_but_no_verdict(tmp_path: Path) -> None:
    """8 of 40 more items right on seed 0 alone: test items alone would call it separable; one seed says
    nothing of what another seed's labels and training would do, so the report gives no verdict."""
    root, base = tmp_path / "one", (np.random.default_rng(5).random((3, N)) < 0.3).astype(int)
    better = base.copy()
    better[:, np.flatnonzero(base[-1] == 0)[:8]] = 1
    make_item_run(root / "random-0", "random", 0, base)
    make_item_run(root / "pe-0", "pe", 0, better)
    [comp] = summarise(find_runs([root]))["comparisons"]
    acc = comp["final_accuracy"]
    assert acc["lo"] > 0 and acc["estimate"] == pytest.approx(8 / N)  # the items' interval excludes 0 ...
    assert not acc["separable"] and acc["verdict"].startswith("no verdict (one seed")  # ... yet no verdict
