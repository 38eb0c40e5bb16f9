"""`star compare` on the tiny model: a 2 x 2 grid runs, resumes only an interrupted cell, and reports."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from star import loop
from star.cli import main
from star.config import RunConfig
from star.errors import ConfigError, RunStateError
from star.experiments.compare import Arm, compare, parse_seeds, parse_strategies

DEFAULT_SUBSAMPLE = RunConfig().al.score_subsample


def _numbers(report_dir: Path) -> dict:
    """report.json without wall-clock seconds."""
    data = json.loads((report_dir / "report.json").read_text())
    for arm in data["arms"]:
        arm.pop("seconds")
    for run in data["runs"]:  # each run's own metrics.json rounds, kept so a report can be read back
        for m in run.get("metrics", []):
            m.pop("seconds")
    return data


def _record_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap loop.run to log 'start DIR' or 'resume DIR' per call."""
    calls, original = [], loop.run

    def wrapper(config=None, resume=None, show_progress=True):
        calls.append(f"resume {Path(resume).parent.name}/{Path(resume).name}" if resume is not None
                     else f"start {config.output_dir}")
        return original(config, resume=resume, show_progress=show_progress)

    monkeypatch.setattr(loop, "run", wrapper)
    return calls


def test_grid_runs_resumes_only_the_interrupted_cell_and_reports(tiny_run_config, tmp_path, monkeypatch):
    base = copy.deepcopy(tiny_run_config)
    base["al"]["rounds"] = 2
    arms = [Arm.strategy("random"), Arm("pe-nodecay", ("al.strategy=pe-dynamic", "train.weight_decay_b=0"))]
    out = tmp_path / "grid"
    calls = _record_calls(monkeypatch)
    report = compare(base, arms, [0, 1], out, show_progress=False)
    assert len(calls) == 4 and all(c.startswith("start") for c in calls)
    first = _numbers(report)
    assert [a["name"] for a in first["arms"]] == ["random", "pe-nodecay"]
    assert all(a["n_runs"] == 2 and len(a["rounds"]) == 2 for a in first["arms"])
    assert first["knobs"]["al.rounds"] == [2] and first["knobs"]["al.score_subsample"] == [DEFAULT_SUBSAMPLE]
    assert first["config_differences"]["train.weight_decay_b"] == {"random": [0.5], "pe-nodecay": [0.0]}
    [comp] = first["comparisons"]  # the bootstrap, from the runs' predictions.jsonl on the shared test set
    assert (comp["arm"], comp["against"], comp["seeds"]) == ("pe-nodecay", "random", [0, 1])
    assert comp["resampled"] == "seeds and test items (one test set)" and comp["test_items"] == [6, 6]
    assert comp["final_accuracy"]["verdict"] in ("separable at 95%", "not separable")
    assert [r["missing"] for r in first["items"]["runs"]] == [None] * 4 and len(first["items"]["test_sets"]) == 1
    for name in ("report.md", "report.html", "learning_curve.png", "ece_curve.png", "reliability.png"):
        assert (report / name).is_file()
    assert "pe-nodecay" not in (out / "random" / "seed-0" / "log.txt").read_text()  # each cell logs only to itself

    (out / "pe-nodecay" / "seed-1" / "round-1" / "metrics.json").unlink()  # the last cell was interrupted
    untouched = (out / "random" / "seed-0" / "round-1" / "metrics.json").stat().st_mtime_ns
    calls.clear()
    assert compare(base, arms, [0, 1], out, show_progress=False) == report
    assert calls == ["resume pe-nodecay/seed-1"]
    assert (out / "random" / "seed-0" / "round-1" / "metrics.json").stat().st_mtime_ns == untouched
    assert _numbers(report) == first

    calls.clear()
    assert main(["compare", "--resume", str(out), "--quiet"]) == 0 and calls == []  # all finished: nothing runs
    (report / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (report / "report.md").is_file() and _numbers(report) == first
    assert main(["report", str(out / "random" / "seed-0"), str(out / "random" / "seed-1"), "--out", str(tmp_path / "r")]) == 0
    assert _numbers(tmp_path / "r")["arms"][0] == first["arms"][0]


def test_cli_compare_with_config_arms_and_overrides(tiny_run_config, tmp_path, monkeypatch):
    config_file = tmp_path / "base.yaml"
    config_file.write_text(yaml.safe_dump(tiny_run_config))
    out = tmp_path / "cli-grid"
    argv = ["compare", "--config", str(config_file), "--strategies", "random", "--arm", "nd:al.strategy=pe,train.weight_decay_b=0",
            "--seeds", "0", "--out", str(out), "--quiet", "al.rounds=1"]
    calls = _record_calls(monkeypatch)
    assert main(argv) == 0 and len(calls) == 2
    grid = yaml.safe_load((out / "grid.yaml").read_text())
    assert grid["arms"][1] == {"name": "nd", "overrides": ["al.strategy=pe", "train.weight_decay_b=0"]}
    assert grid["base_config"]["al"]["rounds"] == 1 and grid["seeds"] == [0]
    assert (out / "report" / "report.html").is_file()
    calls.clear()
    assert main(argv) == 0 and calls == []  # the same command again: every cell finished, skipped
    assert main(argv[:-1] + ["al.rounds=2"]) == 2  # another grid in the same folder is refused


def test_every_bad_cell_is_reported_before_anything_runs(tiny_run_config, tmp_path):
    arms = [Arm("bad-strategy", ("al.strategy=nope",)), Arm("bad-rank", ("lora.r=0",)), Arm.strategy("random")]
    with pytest.raises(ConfigError) as err:
        compare(tiny_run_config, arms, [0, 1], tmp_path / "grid", show_progress=False)
    text = str(err.value)
    assert "4 of 6 grid cells are invalid" in text
    for cell in ("bad-strategy/seed-0", "bad-strategy/seed-1", "bad-rank/seed-0", "bad-rank/seed-1"):
        assert f"cell {cell}" in text
    assert not (tmp_path / "grid").exists()


def test_grid_shape_and_changed_grid_are_rejected(tiny_run_config, tmp_path):
    with pytest.raises(ConfigError, match="more than once"):
        compare(tiny_run_config, [Arm.strategy("random"), Arm.strategy("random")], [0], tmp_path / "a", show_progress=False)
    with pytest.raises(ConfigError, match="set by the grid"):
        compare(tiny_run_config, [Arm("x", ("seed=3",))], [0], tmp_path / "a", show_progress=False)
    with pytest.raises(ConfigError, match="folder name"):
        compare(tiny_run_config, [Arm("../up", ())], [0], tmp_path / "a", show_progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "grid.yaml").write_text("version: 1\nbase_config: {}\narms: []\nseeds: [0]\ncells: []\n")
    with pytest.raises(ConfigError, match="records a different grid"):
        compare(tiny_run_config, [Arm.strategy("random")], [0], tmp_path / "b", show_progress=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "stray.txt").write_text("x")
    with pytest.raises(RunStateError, match="not empty"):
        compare(tiny_run_config, [Arm.strategy("random")], [0], tmp_path / "c", show_progress=False)


def test_arm_and_seed_parsing():
    assert Arm.parse("nodecay:train.weight_decay_b=0,al.mc_dropout=false") == Arm(
        "nodecay", ("train.weight_decay_b=0", "al.mc_dropout=false"))
    assert Arm.parse("qv:lora.target_modules=[q_proj,v_proj]").overrides == ("lora.target_modules=[q_proj,v_proj]",)
    assert parse_strategies("random, pe") == [Arm("random", ("al.strategy=random",)), Arm("pe", ("al.strategy=pe",))]
    assert parse_seeds("0,1,2") == [0, 1, 2]
    with pytest.raises(ConfigError, match="NAME:key=value"):
        Arm.parse("no-colon")
    with pytest.raises(ConfigError, match="integers"):
        parse_seeds("0,x")
    assert main(["compare", "--strategies", "random"]) == 2  # --out is required


def test_cells_run_seed_major_so_a_stopped_grid_compares_arms_on_the_same_seeds(tiny_run_config, tmp_path):
    from star.experiments.compare import plan

    cells = plan(copy.deepcopy(tiny_run_config), parse_strategies("random,pe") + [Arm.parse("no-decay:train.weight_decay_b=0")],
                 [0, 1], tmp_path / "grid")
    assert [(c.arm, c.seed) for c in cells] == [("random", 0), ("pe", 0), ("no-decay", 0),
                                                 ("random", 1), ("pe", 1), ("no-decay", 1)]
    assert cells[2].config.train.weight_decay_b == 0 and cells[4].path == tmp_path / "grid" / "pe" / "seed-1"


def _strip_precision(path: Path, *sections: str) -> None:
    """Remove the precision fields from a stored YAML, as a version before them wrote it."""
    data = yaml.safe_load(path.read_text())
    for section in sections:
        node = data
        for key in section.split("."):
            node = node[key]
        node.pop("precision")
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_grid_written_before_the_precision_fields_resumes_with_its_old_behaviour(tiny_run_config, tmp_path):
    """Fields added later with a behaviour-changing default (train.precision) take the old value."""
    from star.experiments.compare import resume_compare

    base = copy.deepcopy(tiny_run_config)
    base["al"]["rounds"] = 1
    base["train"]["precision"] = "fp32"
    out = tmp_path / "grid"
    compare(base, [Arm.strategy("random")], [0, 1], out, show_progress=False)
    _strip_precision(out / "grid.yaml", "base_config.train", "base_config.al")
    _strip_precision(out / "random" / "seed-0" / "config.yaml", "train", "al")
    shutil.rmtree(out / "random" / "seed-1")  # interrupted before this cell started

    resume_compare(out, show_progress=False)  # before the fix: "records a different grid"
    redone = yaml.safe_load((out / "random" / "seed-1" / "config.yaml").read_text())
    assert redone["train"]["precision"] == "fp32" and redone["al"]["precision"] == "fp32"
    # Starting the same grid with today's defaults is a different grid (bf16-capable training and scoring).
    today = copy.deepcopy(base)
    today["train"].pop("precision")
    with pytest.raises(ConfigError, match=r"records a different grid \(differs in base_config.al.precision, "
                                          r"base_config.train.precision\)"):
        compare(today, [Arm.strategy("random")], [0, 1], out, show_progress=False)


def test_jobs_run_cells_in_worker_processes_with_the_same_results(tiny_run_config, tmp_path):
    """--jobs 2: each cell is a `python -m star run` child; the numbers equal the in-process grid's."""
    base = copy.deepcopy(tiny_run_config)
    base["al"]["rounds"] = 2
    arms = [Arm.strategy("random"), Arm.strategy("pe-dynamic")]
    one = compare(base, arms, [0, 1], tmp_path / "one", show_progress=False)
    (tmp_path / "two" / "pe-dynamic").mkdir(parents=True)
    shutil.copytree(tmp_path / "one" / "pe-dynamic" / "seed-1", tmp_path / "two" / "pe-dynamic" / "seed-1")
    (tmp_path / "two" / "pe-dynamic" / "seed-1" / "round-1" / "metrics.json").unlink()  # an interrupted cell
    shutil.copy(tmp_path / "one" / "grid.yaml", tmp_path / "two" / "grid.yaml")
    two = compare(base, arms, [0, 1], tmp_path / "two", show_progress=False, jobs=2)
    assert _numbers(one)["arms"] == _numbers(two)["arms"]
    logs = sorted(p.name for p in (tmp_path / "two" / "logs").iterdir())
    assert logs == ["pe-dynamic-seed-0.log", "pe-dynamic-seed-1.log", "random-seed-0.log", "random-seed-1.log"]


def test_a_failed_cell_is_named_with_its_log_and_the_others_still_report(tiny_run_config, tmp_path):
    base = copy.deepcopy(tiny_run_config)
    base["al"]["rounds"] = 1
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    arms = [Arm.strategy("random"), Arm("broken", (f"model.name={not_a_model}",))]
    with pytest.raises(RunStateError, match=r"1 grid cell\(s\) failed") as info:
        compare(base, arms, [0], tmp_path / "grid", show_progress=False, jobs=2)
    assert "broken/seed-0: exit code 2" in info.value.message
    assert str(tmp_path / "grid" / "logs" / "broken-seed-0.log") in info.value.message
    report = json.loads((tmp_path / "grid" / "report" / "report.json").read_text())
    assert next(a for a in report["arms"] if a["name"] == "random")["n_runs"] == 1


def test_worker_env_gives_each_worker_a_gpu_or_its_share_of_the_cores(monkeypatch):
    from star.experiments.grid_jobs import worker_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_env(0, 2, [], cores=8)["OMP_NUM_THREADS"] == "4"
    assert worker_env(1, 3, [], cores=2)["OMP_NUM_THREADS"] == "1"
    assert [worker_env(s, 3, ["4", "5"], cores=8)["CUDA_VISIBLE_DEVICES"] for s in range(3)] == ["4", "5", "4"]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_env(0, 2, [], cores=8)["OMP_NUM_THREADS"] == "3"  # the user's setting wins
