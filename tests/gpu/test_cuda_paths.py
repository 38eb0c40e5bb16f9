"""The GPU path on the tiny model. Skipped without CUDA; `bench/gpu_check.sh` runs it on a lent GPU.

Nothing here can run on the CPU-only machine that builds the project, so these tests are the
first thing to run wherever a GPU is available.
"""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch

from star import loop
from star.config import build_config
from star.engine.seeded_dropout import RowSeededDropout, keep_hashed, row_seeds

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_hashed_masks_are_the_same_on_the_gpu_and_the_cpu() -> None:
    shape, args = torch.Size((3, 17, 40)), ([1, 2, 3], [17, 9, 1], 5, 0.3)
    assert torch.equal(keep_hashed(shape, *args, "cuda").cpu(), keep_hashed(shape, *args, "cpu"))


def test_lora_dropout_on_the_gpu_draws_its_mask_there() -> None:
    x = torch.randn(2, 5, 8, device="cuda")
    with row_seeds([3, 4], [5, 2]):
        y = RowSeededDropout(0.5, layer_key=1).train()(x)
    keep = keep_hashed(x.shape, [3, 4], [5, 2], 1, 0.5, "cpu")
    torch.testing.assert_close(y.cpu(), x.cpu() * keep * 2.0, rtol=0, atol=0)


def _run(tiny_run_config: dict, tmp_path, **sections) -> list[dict]:
    """Two rounds of the tiny run on cuda:0 with `sections` merged in; returns the metrics."""
    data = copy.deepcopy(tiny_run_config)
    data["al"]["rounds"] = 2
    data["model"]["device"] = "cuda"
    data["output_dir"] = str(tmp_path / "run")
    for section, values in sections.items():
        data[section].update(values)
    return loop.run(build_config(data), show_progress=False)


def test_a_run_on_the_gpu_trains_in_bf16_and_finishes(tiny_run_config, tmp_path) -> None:
    metrics = _run(tiny_run_config, tmp_path)
    assert [m["round"] for m in metrics] == [0, 1]
    assert metrics[-1]["train"]["precision"] == "bf16" and 0.0 <= metrics[-1]["accuracy"] <= 1.0
    scores = [json.loads(line) for line in (tmp_path / "run" / "round-1" / "scores.jsonl").read_text().splitlines()]
    assert scores and all(torch.isfinite(torch.tensor(r["score"])) for r in scores)
    assert (tmp_path / "run" / "round-1" / "adapter" / "adapter_model.safetensors").is_file()


def test_gradient_checkpointing_on_the_gpu(tiny_run_config, tmp_path) -> None:
    metrics = _run(tiny_run_config, tmp_path, train={"gradient_checkpointing": True})
    assert all(m["train"]["steps"] > 0 for m in metrics)


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")
def test_a_4bit_base_runs_on_the_gpu(tiny_run_config, tmp_path) -> None:
    metrics = _run(tiny_run_config, tmp_path, model={"load_in_4bit": True})
    assert [m["round"] for m in metrics] == [0, 1]
