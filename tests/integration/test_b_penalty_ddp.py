"""train.b_penalty under DDP: two processes train the same adapter as one (the penalty counted once per step)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from star.parallel.distributed import free_port

ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")
pytestmark = pytest.mark.skipif(not os.path.exists(ACCELERATE), reason="accelerate CLI not installed")

SCRIPT = '''
import sys, torch
from star.config import LoraSettings, ModelConfig, TrainConfig
from star.engine.adapter import lora_parameters, reset_adapter
from star.engine.modeling import load_model
from star.engine.training import train_adapter
from star.parallel import distributed

prompts = [[2, 40, 41, 42, 43], [2, 50], [2, 60, 61, 62, 63, 64, 65, 66], [2, 70, 71], [2, 33], [2, 34, 35], [2, 36]]
responses = [[80, 81, 1], [90, 91, 92, 93, 94, 1], [100, 101], [110, 111, 112, 1], [7, 1], [8, 9, 1], [10, 1]]
dist = distributed.init("cpu")
model = load_model(ModelConfig(name=sys.argv[1], threads=1, device="cpu"), LoraSettings(r=2, alpha=4, dropout=0.1),
                   show_progress=False).model
reset_adapter(model, seed=0)
config = TrainConfig(batch_size=3, epochs=2, lr=1e-2, weight_decay_b=0.0, b_penalty=float(sys.argv[2]),
                     precision="fp32")
stats = train_adapter(model, prompts, responses, 0, config, seed=1, show_progress=False, dist=dist)
if dist.is_main:  # batches of 3, 3 and 1 rows: the last leaves one process a stand-in row weighted 0
    torch.save({"b": [p.detach().clone() for p in lora_parameters(model)[1]], "loss": stats.mean_loss}, sys.argv[3])
distributed.leave_process_group()
'''


def _train(script: Path, model_dir: Path, beta: float, out: Path, processes: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if processes == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [ACCELERATE, "launch", "--main_process_port", str(free_port()), "--multi_gpu", "--num_processes",
               str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    done = subprocess.run([*cmd, str(model_dir), str(beta), str(out)], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(out)


def test_ddp_b_penalty_matches_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    one = _train(script, tiny_model_dir, 5.0, tmp_path / "one.pt", 1)
    two = _train(script, tiny_model_dir, 5.0, tmp_path / "two.pt", 2)
    plain = _train(script, tiny_model_dir, 0.0, tmp_path / "plain.pt", 2)
    for b1, b2 in zip(one["b"], two["b"]):
        torch.testing.assert_close(b2, b1, rtol=1e-4, atol=1e-6)
    assert abs(one["loss"] - two["loss"]) < 1e-5  # the logged loss is the data loss, the same in both
    shrink = sum(float((b ** 2).sum()) for b in two["b"]) / sum(float((b ** 2).sum()) for b in plain["b"])
    assert shrink < 0.5, f"the penalty did not act under DDP (|B|^2 ratio {shrink:.3f})"
