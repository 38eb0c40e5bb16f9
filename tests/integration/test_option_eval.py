"""eval.mode in a whole run: closed tasks are evaluated by option likelihood, old runs resume by generation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from star.loop import run
from star.store.io import read_jsonl
from star.store.runs import RunDir


def _closed_task(folder: Path) -> dict:
    folder.mkdir()
    for split, size in (("train", 30), ("test", 6)):
        rows = [{"question": f"Is {i} larger than {i % 7}?", "answer": "yes" if i > i % 7 else "no"} for i in range(size)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"name": "jsonl", "path": str(folder), "pool_size": 24, "test_size": 6, "answer_type": "choice",
            "choices": ["yes", "no"]}


def test_a_closed_task_is_evaluated_by_option_likelihood(tiny_run_config: dict, tmp_path: Path) -> None:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["task"] = _closed_task(tmp_path / "data")
    cfg["al"].update({"rounds": 2, "response": "options"})
    metrics = run(cfg, show_progress=False)
    assert [m["eval_mode"] for m in metrics] == ["options", "options"]
    for m in metrics:
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["accuracy_norm"] <= 1.0 and m["n_test"] == 6
        assert 0.5 <= m["mean_confidence"] <= 1.0  # the argmax of 2 renormalised options
    rows = read_jsonl(RunDir(cfg["output_dir"]).predictions_path(1))
    assert len(rows) == 6 and all(len(r["option_logprobs"]) == 2 and r["prediction"] in ("yes", "no") for r in rows)
    gold = {f"jsonl-test-{i + 1}": "yes" if i > i % 7 else "no" for i in range(6)}  # ids name the file's line
    assert all(r["correct"] == (r["prediction"] == gold[r["id"]]) for r in rows)


def test_a_run_recorded_before_eval_mode_resumes_by_generation(tiny_run_config: dict, tmp_path: Path) -> None:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["task"] = _closed_task(tmp_path / "data")
    cfg["al"]["rounds"] = 2
    cfg["eval"]["mode"] = "generate"
    first = run(cfg, show_progress=False)
    folder = RunDir(cfg["output_dir"])
    stored = yaml.safe_load(folder.config_path.read_text())
    del stored["eval"]["mode"]  # as written before eval.mode existed
    folder.config_path.write_text(yaml.safe_dump(stored, sort_keys=False))
    folder.metrics_path(1).unlink()  # round 1 unfinished
    resumed = run(resume=folder.path, show_progress=False)
    assert resumed[1]["eval_mode"] == "generate" and resumed[1]["accuracy_norm"] is None
    assert resumed[1]["accuracy"] == first[1]["accuracy"]
    assert "output" in read_jsonl(folder.predictions_path(1))[0]  # generated text, as before
