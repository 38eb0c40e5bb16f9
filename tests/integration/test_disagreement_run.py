"""A run ranked by the disagreement of the MC passes: bald-dynamic over a closed task's answer options."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np

from star.al.strategies import minmax
from star.loop import run
from star.store.io import read_appended_jsonl, read_jsonl
from star.store.runs import RunDir


def _choice_data(folder: Path, n: int) -> Path:
    folder.mkdir()
    for split, size in (("train", n), ("test", 6)):
        rows = [{"question": f"Is {i} larger than {i % 7}?", "answer": "y" if i > i % 7 else "n"} for i in range(size)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_bald_dynamic_run_records_bald_and_the_base_models_entropy(tiny_run_config: dict, tmp_path: Path) -> None:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["task"] = {"name": "jsonl", "path": str(_choice_data(tmp_path / "data", 30)), "pool_size": 24, "test_size": 6,
                   "answer_type": "choice", "choices": ["y", "n"]}
    cfg["al"].update({"response": "options", "rounds": 2, "strategy": "bald-dynamic", "mc_passes": 3})
    cfg["lora"]["dropout"] = 0.5  # passes that visibly disagree on a tiny model
    metrics = run(cfg, show_progress=False)
    assert [m["round"] for m in metrics] == [0, 1] and metrics[1]["strategy"] == "bald-dynamic"
    assert metrics[1]["gold_peeks"] == 0  # label-free, as any options scoring
    run_dir = RunDir(cfg["output_dir"])
    rows = read_jsonl(run_dir.scores_path(1))
    assert len(rows) == 20 and sum(r["selected"] for r in rows) == 4
    # u_full is BALD of the tuned model's 3 passes: >= 0, below ln 2 (2 options), and above rounding noise
    # (a LoRA trained for a few steps from B = 0 moves little: ~1e-8 nats here).
    bald = np.array([r["u_full"] for r in rows])
    assert ((bald >= 0.0) & (bald <= math.log(2))).all() and bald.max() > 1e-12
    # u_base is the base model's ME over the options (its one pass has no disagreement), as stored per example.
    base_me = {r["id"]: r["me"] for r in read_appended_jsonl(run_dir.base_scores_path)}
    assert all(r["u_base"] == base_me[r["id"]] for r in rows)
    assert all(0.0 < r["u_base"] <= math.log(2) for r in rows)
    # the score ranked on is STAR's mix of the two, with lambda(0)
    lam, u_base = metrics[1]["lambda"], np.array([r["u_base"] for r in rows])
    np.testing.assert_allclose([r["score"] for r in rows], lam * minmax(u_base) + (1 - lam) * minmax(bald), atol=1e-9)


def test_pe_spread_dynamic_run_records_the_spread_and_the_base_models_pe(tiny_run_config: dict) -> None:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["al"].update({"rounds": 2, "strategy": "pe-spread-dynamic", "mc_passes": 2})
    cfg["lora"]["dropout"] = 0.5
    metrics = run(cfg, show_progress=False)
    assert [m["round"] for m in metrics] == [0, 1] and metrics[1]["strategy"] == "pe-spread-dynamic"
    run_dir = RunDir(cfg["output_dir"])
    rows = read_jsonl(run_dir.scores_path(1))
    assert all(r["u_full"] >= 0.0 for r in rows) and max(r["u_full"] for r in rows) > 1e-12  # std of PE, 2 passes
    base_pe = {r["id"]: r["pe"] for r in read_appended_jsonl(run_dir.base_scores_path)}
    assert all(r["u_base"] == base_pe[r["id"]] for r in rows)
