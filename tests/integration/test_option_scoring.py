"""Label-free scoring over a closed task's answer options (al.response=options)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from star.errors import ConfigError
from star.loop import run
from star.store.io import read_jsonl
from star.store.runs import RunDir


def _choice_data(folder: Path, n: int) -> Path:
    folder.mkdir()
    for split, size in (("train", n), ("test", 6)):
        rows = [{"question": f"Is {i} larger than {i % 7}?", "answer": "yes" if i > i % 7 else "no"} for i in range(size)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_options_response_scores_without_reading_labels(tiny_run_config: dict, tmp_path: Path) -> None:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["task"] = {"name": "jsonl", "path": str(_choice_data(tmp_path / "data", 30)), "pool_size": 24, "test_size": 6,
                   "answer_type": "choice", "choices": ["yes", "no"]}
    cfg["al"].update({"response": "options", "rounds": 2})
    metrics = run(cfg, show_progress=False)
    assert [m["gold_peeks"] for m in metrics] == [0, 0]
    assert [m["label_reads"] for m in metrics] == [4, 4]
    rows = read_jsonl(RunDir(cfg["output_dir"]).scores_path(1))
    assert all(r["u_base"] is not None and r["u_full"] is not None for r in rows)
    # PE over options is -log of the top option's renormalised probability: within [0, log 2]
    assert all(0.0 <= r["u_full"] <= 0.6932 for r in rows)


def test_options_response_needs_a_closed_task(tiny_run_config: dict) -> None:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["al"]["response"] = "options"
    with pytest.raises(ConfigError, match="al.response=options needs a closed answer set"):
        run(cfg, show_progress=False)
    assert not Path(cfg["output_dir"]).exists()
