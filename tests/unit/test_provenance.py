"""The machine record of every round (loop/provenance.py) and how `star report` groups runs by it: bf16 runs
give the same bits on one kind of machine only, so a report pairing runs of several kinds says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from test_report import make_item_run

from star.engine.precision import fast_bf16
from star.experiments.document import document
from star.experiments.records import find_runs, machine_kind
from star.experiments.render import render_markdown
from star.experiments.summary import summarise
from star.loop import provenance
from star.store.io import read_json, write_json

AMX = {"cpu": "Intel(R) Xeon(R) Platinum", "bf16": "amx"}
EPYC = {"cpu": "AMD EPYC", "bf16": "avx512_bf16"}


def test_the_record_names_this_cpu_its_bf16_path_and_the_code() -> None:
    rec = provenance.machine_record(torch.device("cpu"), world=2)
    assert rec["cpu"] == provenance.cpu_model() and rec["cpu"]
    assert rec["bf16"] in ("amx", "avx512_bf16", "none")
    assert (rec["bf16"] != "none") == fast_bf16(torch.device("cpu"))
    assert rec["world"] == 2 and rec["torch"] == torch.__version__ and rec["device"] == "cpu"
    assert Path(rec["star_source"]) == Path(provenance.__file__).resolve().parents[1]
    assert "gpu" not in rec


def test_the_kind_is_the_model_and_its_bf16_path() -> None:
    assert machine_kind(EPYC) == "AMD EPYC (avx512_bf16)"
    assert machine_kind({**AMX, "gpu": "NVIDIA H200", "bf16": "cuda"}) == "NVIDIA H200 (cuda)"
    assert machine_kind(None) == machine_kind({}) == "not recorded"


def _stamp(run: Path, machines: list[dict | None]) -> None:
    """Give each round's metrics.json of `run` the machine record at that round (None: none recorded)."""
    for t, rec in enumerate(machines):
        path = run / f"round-{t}" / "metrics.json"
        metrics = read_json(path)
        if rec is not None:
            metrics["machine"] = rec
        write_json(path, metrics)


def test_a_report_names_each_runs_machines_and_warns_when_they_differ(tmp_path: Path) -> None:
    correct = (np.random.default_rng(0).random((3, 20)) < 0.5).astype(int)  # (T, N)
    a = make_item_run(tmp_path / "runs" / "random-0", "random", 0, correct)
    b = make_item_run(tmp_path / "runs" / "pe-0", "pe", 0, correct)
    _stamp(a, [EPYC] * 3)
    _stamp(b, [AMX, AMX, EPYC])  # resumed on another machine for its last round
    s = summarise(find_runs([tmp_path / "runs"]))
    machines = {r["arm"]: r["machines"] for r in s["runs"]}
    assert machines == {"random": ["AMD EPYC (avx512_bf16)"],
                        "pe": ["Intel(R) Xeon(R) Platinum (amx)", "AMD EPYC (avx512_bf16)"]}
    md = render_markdown(document(s))
    assert "come from 2 kinds of machine" in md and "| Intel(R) Xeon(R) Platinum (amx); AMD EPYC (avx512_bf16) |" in md

    _stamp(b, [EPYC] * 3)
    assert "kinds of machine" not in render_markdown(document(summarise(find_runs([tmp_path / "runs"]))))


def test_runs_from_before_the_record_are_not_recorded_and_raise_no_warning(tmp_path: Path) -> None:
    correct = np.ones((2, 10), dtype=int)
    make_item_run(tmp_path / "runs" / "random-0", "random", 0, correct)
    _stamp(make_item_run(tmp_path / "runs" / "pe-0", "pe", 0, correct), [EPYC, EPYC])
    s = summarise(find_runs([tmp_path / "runs"]))
    assert {r["arm"]: r["machines"] for r in s["runs"]}["random"] == ["not recorded"]
    assert "kinds of machine" not in render_markdown(document(s))
