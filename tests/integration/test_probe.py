"""`star probe` end to end on the tiny random model: files, finite numbers in range, resume, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from star.cli import main


@pytest.fixture
def probe_config(tiny_run_config: dict, tmp_path: Path, monkeypatch) -> Path:
    """The tiny run's config as a file; answers graded right when the gold answer is even, so both classes occur
    (the random model gets every arithmetic answer wrong, which leaves AUROC undefined)."""
    from star.tasks.arithmetic import ArithmeticTask

    monkeypatch.setattr(ArithmeticTask, "is_correct", lambda self, pred, gold: int(self.gold_answer(gold)) % 2 == 0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_run_config))
    return path


def _walk_numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk_numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk_numbers(v)
    elif isinstance(value, float):
        yield value


def test_probe_end_to_end_and_resume(probe_config: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "probe"
    args = ["probe", "--config", str(probe_config), "--sizes", "0,4", "--probe-size", "6",
            "--strength", "train.b_penalty=0.5", "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert "probe.md" in capsys.readouterr().out
    for name in ("probe.json", "probe.md", "auroc_vs_labels.png", "ece_vs_labels.png", "ece_vs_strength.png"):
        assert (out / name).stat().st_size > 0, name
    record = json.loads((out / "probe.json").read_text())
    assert [s["labels"] for s in record["sizes"]] == [0, 4]
    assert record["config"]["seed"] == 0 and record["seeds"]["probe_set"] and len(record["probe_ids"]) == 6
    assert all(math.isfinite(x) for x in _walk_numbers(record))
    assert not set(record["probe_ids"]) & set(record["sizes"][1]["labelled_ids"])
    for size in record["sizes"]:
        gap = size["gap"]
        assert 0 <= gap["accuracy"] <= 1 and gap["n"] == 6
        for score in ("u_base", "u_full", "u_full_mc"):
            for measure in ("pe", "me"):
                assert 0 <= gap["auroc"][score][measure] <= 1, (size["labels"], score, measure)
        assert [r["variant"] for r in size["calibration"]] == ["off", "config", "train.b_penalty=0.5"]
        for row in size["calibration"]:
            assert 0 <= row["ece"] <= 1 and 0 <= row["accuracy"] <= 1 and 0 <= row["mean_confidence"] <= 1
    base = record["sizes"][0]["gap"]["auroc"]
    assert base["u_full"] == base["u_base"]  # labels 0: the tuned model is the base model
    assert set(record["sizes"][1]["training"]) == {"weight_decay_b=0.5,b_penalty=0", "weight_decay_b=0,b_penalty=0",
                                                   "weight_decay_b=0,b_penalty=0.5"}
    md = (out / "probe.md").read_text()
    assert "## Uncertainty gap" in md and "`train.b_penalty=0.5`" in md

    import star.experiments.probe as probe_module

    def no_training(*_a, **_k):
        raise AssertionError("a size already in probe.json was measured again")

    monkeypatch.setattr(probe_module, "train_live", no_training)
    assert main(args) == 0  # resumed: both sizes are done
    assert json.loads((out / "probe.json").read_text())["sizes"] == record["sizes"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--sizes", "0,x"], "--sizes: 'x' is not a whole number"),
    (["--strength", "train.lr=0.1"], "--strength 'train.lr=0.1': not KEY=V1,V2"),
    (["--strength", "al.mc_dropout_p=1.5"], "a dropout probability must be below 1"),
    (["--sizes", "0,40"], "the pool has 24 examples; the probe needs --probe-size 6"),
])
def test_a_bad_option_is_one_clear_error(probe_config: Path, tmp_path: Path, capsys, extra: list[str],
                                         message: str) -> None:
    args = ["probe", "--config", str(probe_config), "--probe-size", "6", "--out", str(tmp_path / "p"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "hint:" in err
    assert not (tmp_path / "p" / "probe.json").exists()


def test_probe_needs_out(probe_config: Path, capsys) -> None:
    assert main(["probe", "--config", str(probe_config)]) == 2
    assert "star probe needs --out DIR" in capsys.readouterr().err


def test_mc_variant_through_the_api(probe_config: Path, tmp_path: Path) -> None:
    from star.config import load_config
    from star.experiments.probe import ProbeSettings, probe

    settings = ProbeSettings.parse("4", 6, ["al.mc_dropout_p=0.3,0"])
    assert settings.strengths == (("al.mc_dropout_p", (0.0, 0.3)),)
    out = probe(load_config(probe_config), settings, tmp_path / "mc", show_progress=False)
    rows = {r["variant"]: r for r in json.loads((out / "probe.json").read_text())["sizes"][0]["calibration"]}
    assert set(rows) == {"off", "config", "al.mc_dropout_p=0", "al.mc_dropout_p=0.3"}
    off, p0, p3 = rows["off"], rows["al.mc_dropout_p=0"], rows["al.mc_dropout_p=0.3"]
    assert off["accuracy"] == p0["accuracy"] == p3["accuracy"]  # the same answers, other confidences
    assert abs(p0["mean_confidence"] - off["mean_confidence"]) < 1e-4  # p = 0: teacher-forced = generation's
    assert p3["mean_confidence"] != p0["mean_confidence"] and 0 <= p3["ece"] <= 1
    assert (out / "ece_vs_strength.png").is_file()


def test_mc_token_logprobs_match_generation_without_dropout(tiny_model_dir: Path) -> None:
    import numpy as np
    import torch

    from star.config import LoraSettings, ModelConfig
    from star.engine.adapter import dropout_rate, lora_parameters
    from star.engine.generation import generate
    from star.engine.modeling import load_model
    from star.experiments.probe_measure import mc_token_logprobs

    loaded = load_model(ModelConfig(name=str(tiny_model_dir), threads=1), LoraSettings(r=2, alpha=4, dropout=0.1))
    model, tok = loaded.model, loaded.tokenizer
    with torch.no_grad():
        for p in lora_parameters(model)[1]:
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.5)
    prompts = [[2, 40, 41, 42], [2, 50], [2, 60, 61, 62, 63, 64]]
    gens = generate(model, tok, prompts, 6, 8, show_progress=False)
    with dropout_rate(model, 0.0):
        still = mc_token_logprobs(model, prompts, [g.token_ids for g in gens], 0, passes=2, seed=1, batch_size=8)
    with dropout_rate(model, 0.5):
        noisy = mc_token_logprobs(model, prompts, [g.token_ids for g in gens], 0, passes=2, seed=1, batch_size=8)
    for g, s, n in zip(gens, still, noisy):
        assert s.shape == n.shape == (2, len(g.token_ids))
        np.testing.assert_allclose(s[0], g.logprobs, atol=1e-4)
        np.testing.assert_array_equal(s[0], s[1])
    assert any(np.abs(n[0] - n[1]).max() > 1e-4 for n in noisy if n.size)


def test_a_closed_task_probes_with_option_likelihood_calibration(tiny_run_config: dict, tmp_path: Path) -> None:
    """eval.mode=options (auto for a closed task): the MC variant averages the chosen option's probability."""
    import copy

    from star.config import build_config
    from star.experiments.probe import ProbeSettings, probe

    data = tmp_path / "data"
    data.mkdir()
    for split, size in (("train", 30), ("test", 6)):
        rows = [{"question": f"Is {i} larger than {i % 7}?", "answer": "yes" if i > i % 7 else "no"}
                for i in range(size)]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = copy.deepcopy(tiny_run_config)
    cfg["task"] = {"name": "jsonl", "path": str(data), "pool_size": 24, "test_size": 6, "answer_type": "choice",
                   "choices": ["yes", "no"]}
    out = probe(build_config(cfg), ProbeSettings.parse("4", 6, ["al.mc_dropout_p=0,0.5"]), tmp_path / "p",
                show_progress=False)
    rows = {r["variant"]: r for r in json.loads((out / "probe.json").read_text())["sizes"][0]["calibration"]}
    off, p0, p5 = rows["off"], rows["al.mc_dropout_p=0"], rows["al.mc_dropout_p=0.5"]
    assert abs(p0["mean_confidence"] - off["mean_confidence"]) < 1e-5 and abs(p0["ece"] - off["ece"]) < 1e-5
    assert 0.0 <= p5["mean_confidence"] <= 1.0 and p5["mean_confidence"] != p0["mean_confidence"]
