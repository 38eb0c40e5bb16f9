"""Stopping rules on the tiny model: a run stops early by its budget, stays stopped on resume, `star compare`
skips it as finished and its report shows where each rule would have stopped; with al.stop.enforce=false
the run goes on and only records the rules."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from star import loop
from star.al.stopping import cohen_kappa
from star.annotation.queries import open_round
from star.errors import RunStateError
from star.experiments.compare import Arm, compare
from star.loop.provenance import cpu_model
from star.store.labels import LabelStore


def _stopping(settings: dict, **stop: object) -> dict:
    """The tiny run (random selection: no pool scoring) with 4 rounds of 4 labels and al.stop set to `stop`."""
    cfg = copy.deepcopy(settings)
    cfg["al"].update({"strategy": "random", "rounds": 4, "initial": 4, "query": 4, "stop": stop})
    return cfg


def test_run_stops_by_budget_stays_stopped_and_compare_skips_it(tiny_run_settings, tmp_path, monkeypatch, capsys):
    # budget 10 labels: rounds 0 and 1 take 4 each; round 2 takes the 2 left (al.cost fits the batch to the budget),
    # and then nothing is left: the run stops after round 2 of 4. kappa (window 2) is first computed there too; it may
    # hold as well, but budget comes first in al.stop.rules.
    base = _stopping(tiny_run_settings, rules=["budget", "kappa"], budget=10, window=2, set_size=5)
    out = tmp_path / "grid"
    compare(base, [Arm.strategy("random")], [0], out, show_progress=False)
    cell = out / "random" / "seed-0"
    metrics = [json.loads((cell / f"round-{t}" / "metrics.json").read_text()) for t in range(3)]
    assert not (cell / "round-3").exists()
    assert [m["labels"] for m in metrics] == [4, 8, 10]
    assert all(m["machine"]["cpu"] == cpu_model() and m["machine"]["world"] == 1 for m in metrics)
    assert [m["stop"]["stopped_by"] for m in metrics] == [None, None, "budget"]
    assert [m["stop"]["rules"]["budget"] for m in metrics] == [{"value": 4.0, "holds": False},
                                                             {"value": 8.0, "holds": False},
                                                             {"value": 10.0, "holds": True}]
    kappa = [m["stop"]["rules"]["kappa"] for m in metrics]
    assert kappa[:2] == [{"value": None, "holds": False}] * 2  # fewer than 2 pairs of successive models
    assert -1.0 <= kappa[2]["value"] <= 1.0
    for t in range(3):  # model t's stop-set answers, kept for kappa on resume
        rows = [json.loads(line) for line in (cell / f"round-{t}" / "stop_set.jsonl").read_text().splitlines()]
        assert len(rows) == 5 and all(set(r) == {"id", "prediction", "uncertainty"} for r in rows)
        assert metrics[t]["seconds"]["stop"] >= 0
    ids = [[json.loads(line)["id"] for line in (cell / f"round-{t}" / "stop_set.jsonl").read_text().splitlines()]
           for t in range(3)]
    assert ids[0] == ids[1] == ids[2]  # one fixed stop set

    before = {p.name: p.read_bytes() for p in cell.glob("round-*/metrics.json")}
    resumed = loop.run(resume=cell, show_progress=True)  # stays stopped: no new round, the table says why
    assert resumed == metrics and not (cell / "round-3").exists()
    assert {p.name: p.read_bytes() for p in cell.glob("round-*/metrics.json")} == before
    assert "stopped early by budget after round 2" in capsys.readouterr().out
    with pytest.raises(RunStateError, match="stopping rule budget ended it after round 2"):
        open_round(cell)  # `star label` / `star query`: nothing left to label

    def no_run(*args, **kwargs):
        raise AssertionError("a stopped cell must not run again")

    monkeypatch.setattr(loop, "run", no_run)
    report = compare(base, [Arm.strategy("random")], [0], out, show_progress=True)
    assert "random/seed-0: stopped early by budget after round 2, skipped" in capsys.readouterr().out
    data = json.loads((report / "report.json").read_text())
    assert [(r["status"], r["stopped_by"]) for r in data["runs"]] == [("finished", "budget")]
    assert data["arms"][0]["n_runs"] == 1 and len(data["arms"][0]["rounds"]) == 3
    [entry] = data["stopping"]
    assert entry["stopped_by"] == "budget" and entry["final_round"] == 2
    assert entry["rules"]["budget"]["round"] == 2 and entry["rules"]["budget"]["vs_final"] == 0.0
    text = (report / "report.md").read_text()
    assert "## Stopping rules" in text and "finished (stopped early by budget)" in text


def test_not_enforced_rules_are_recorded_and_the_run_goes_on(tiny_run_settings, tmp_path):
    cfg = _stopping(tiny_run_settings, rules=["accuracy", "budget"], accuracy=0.0, budget=10, enforce=False)
    cfg["al"]["rounds"] = 3
    cfg["output_dir"] = str(tmp_path / "run")
    metrics = loop.run(cfg, show_progress=False)
    assert len(metrics) == 3
    assert [m["stop"]["stopped_by"] for m in metrics] == [None, None, None]
    assert [m["stop"]["rules"]["accuracy"] for m in metrics] == [{"value": m["accuracy"], "holds": True}
                                                               for m in metrics]
    assert [m["labels"] for m in metrics] == [4, 8, 12]  # not enforced: no batch is cut to the budget
    assert [m["stop"]["rules"]["budget"]["holds"] for m in metrics] == [False, False, True]
    # neither rule reads the stop set: it is never answered
    assert not list(Path(cfg["output_dir"]).glob("round-*/stop_set.jsonl"))
    assert all("stop" not in m["seconds"] for m in metrics)


def test_kappa_on_resume_reads_earlier_answers_and_redoes_only_damaged_ones(tiny_run_settings, tmp_path):
    cfg = _stopping(tiny_run_settings, rules=["kappa"], window=1, set_size=6, enforce=False)
    cfg["al"]["rounds"] = 3
    cfg["output_dir"] = str(tmp_path / "run")
    run = Path(cfg["output_dir"])
    whole = loop.run(cfg, show_progress=False)
    assert [m["stop"]["rules"]["kappa"]["value"] is None for m in whole] == [True, False, False]
    log = run / "log.txt"
    (run / "round-2" / "metrics.json").unlink()  # round 2 is redone: kappa against model 1's saved answers
    assert loop.run(resume=run, show_progress=False)[2]["stop"] == whole[2]["stop"]
    assert "answers the stop set again" not in log.read_text()
    (run / "round-2" / "metrics.json").unlink()
    (run / "round-1" / "stop_set.jsonl").write_text("{\"id\": \"cut")  # damaged: model 1 answers again
    assert loop.run(resume=run, show_progress=False)[2]["stop"] == whole[2]["stop"]
    assert "model 1 answers the stop set again" in log.read_text()


def test_kappa_and_uncertainty_read_only_the_stop_sets_unlabelled_examples(tiny_run_settings, tmp_path):
    """A stop set as large as the pool: after round t its labelled examples are left out of both rules."""
    cfg = _stopping(tiny_run_settings, rules=["kappa", "uncertainty"], window=1, set_size=24, uncertainty=0.0,
                    enforce=False)
    cfg["al"]["rounds"] = 3
    cfg["output_dir"] = str(tmp_path / "run")
    metrics = loop.run(cfg, show_progress=False)
    run, store = Path(cfg["output_dir"]), LabelStore(Path(cfg["output_dir"]) / "labels.sqlite")
    try:
        labelled = [{lab.example_id for lab in store.up_to(t)} for t in range(3)]
    finally:
        store.close()
    answers = [[json.loads(x) for x in (run / f"round-{t}" / "stop_set.jsonl").read_text().splitlines()] for t in range(3)]
    assert [m["stop"]["stop_set"] for m in metrics] == [{"size": 24, "unlabelled": 24 - 4 * (t + 1)} for t in range(3)]
    for t in range(3):
        keep = [j for j, r in enumerate(answers[t]) if r["id"] not in labelled[t]]
        assert metrics[t]["stop"]["rules"]["uncertainty"]["value"] == pytest.approx(
            np.mean([answers[t][j]["uncertainty"] for j in keep]))
        if t:
            want = cohen_kappa([answers[t - 1][j]["prediction"] for j in keep], [answers[t][j]["prediction"] for j in keep])
            assert metrics[t]["stop"]["rules"]["kappa"]["value"] == pytest.approx(want)


def test_plain_run_records_no_stop(tiny_run_settings, tmp_path):
    cfg = _stopping(tiny_run_settings)
    cfg["al"]["rounds"] = 1
    cfg["output_dir"] = str(tmp_path / "run")
    [m] = loop.run(cfg, show_progress=False)
    assert "stop" not in m and "stop" not in m["seconds"]
    assert not list(Path(cfg["output_dir"]).glob("round-*/stop_set.jsonl"))


def test_replayed_stop_rules_equal_what_the_run_recorded(tiny_run_settings, tmp_path):
    """bench/replay_stop_rules.py rebuilds each round's "stop" record from the saved adapters: on a run that
    recorded its rules, the replay gives the same values and verdicts (kappa and uncertainty included)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from replay_stop_rules import replay

    from star.config import StopConfig

    stop = {"rules": ["kappa", "uncertainty", "budget"], "enforce": False, "window": 1, "uncertainty": 50.0,
            "budget": 8, "set_size": 6}
    cfg = _stopping(tiny_run_settings, **stop)
    cfg["al"]["rounds"] = 3
    cfg["output_dir"] = str(tmp_path / "run")
    metrics = loop.run(cfg, show_progress=False)
    replayed = replay(tmp_path / "run", StopConfig(**stop), threads=1)
    assert replayed == [m["stop"] for m in metrics]
    assert replayed[1]["rules"]["kappa"]["value"] is not None and replayed[2]["rules"]["budget"]["holds"]


def test_recorded_rules_change_no_selection(tiny_run_settings, tmp_path):
    """Rules recorded and not enforced (the stop set answered after every round) leave a pe-dynamic run's
    selections, accuracy and scores as they are without them: what lets a replay pair with such runs."""
    def run(folder: str, stop: dict | None) -> tuple[list[list[str]], list[dict]]:
        cfg = copy.deepcopy(tiny_run_settings)
        cfg["al"].update({"strategy": "pe-dynamic", "rounds": 3, **({"stop": stop} if stop else {})})
        cfg["output_dir"] = str(tmp_path / folder)
        metrics = loop.run(cfg, show_progress=False)
        store = LabelStore(Path(cfg["output_dir"]) / "labels.sqlite")
        picks = [sorted(lab.example_id for lab in store.up_to(t) if lab.round == t) for t in range(3)]
        return picks, [{k: v for k, v in m.items() if k not in ("seconds", "stop")} for m in metrics]

    plain = run("plain", None)
    recorded = run("recorded", {"rules": ["kappa", "uncertainty"], "enforce": False, "window": 1,
                                "uncertainty": 1.0, "set_size": 8})
    assert recorded == plain
    assert (tmp_path / "recorded" / "round-2" / "stop_set.jsonl").is_file()
