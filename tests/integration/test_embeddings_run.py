"""Tiny runs with a test-only strategy that uses embeddings: what it is handed, where the rows come from, what a
plain strategy pays (nothing), and a run killed and resumed (the same embeddings, read from the run's cache).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from star import loop
from star.al.strategies import STRATEGIES, ScoreInputs, Strategy
from star.config import build_config
from star.engine import embeddings as engine_embeddings
from star.engine.batching import encode_prompts
from star.loop import embeddings as loop_embeddings
from star.store.embeddings import read_embedding_file
from star.store.io import read_jsonl
from star.store.labels import LabelStore
from star.store.runs import RunDir
from star.tasks import build_task

ATOL = 1e-5  # fp32 on the CPU: a padded batch and one unpadded row sum in a different order


class Crash(Exception):
    """Stands in for a kill at a chosen point."""


class Recording(Strategy):
    """Stand-in diversity strategy: candidates farthest from the labelled set's mean embedding; keeps its inputs."""

    name = "test-embed"
    uses_embeddings = True
    seen: ClassVar[list[ScoreInputs]] = []

    def score(self, x: ScoreInputs) -> np.ndarray:
        self.seen.append(x)
        return np.linalg.norm(x.embeddings - x.labelled_embeddings.mean(axis=0), axis=1)  # (n,)


class RecordingDynamic(STRATEGIES["pe-dynamic"]):
    """STAR's pe-dynamic (a base-model term: its pass captures the embeddings), recording what it is handed."""

    name = "test-embed-dynamic"
    uses_embeddings = True

    def score(self, x: ScoreInputs) -> np.ndarray:
        Recording.seen.append(x)
        return super().score(x)


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test strategies in the registry (config checks al.strategy against it), their record empty."""
    monkeypatch.setitem(STRATEGIES, Recording.name, Recording)
    monkeypatch.setitem(STRATEGIES, RecordingDynamic.name, RecordingDynamic)
    Recording.seen.clear()


@pytest.fixture
def forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of prompts of each prompt-only embedding forward the loop runs."""
    calls, original = [], loop_embeddings.prompt_embeddings

    def counted(model, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return original(model, prompts, *args, **kwargs)

    monkeypatch.setattr(loop_embeddings, "prompt_embeddings", counted)
    return calls


def _config(base: dict, folder: Path, strategy: str, **al) -> dict:
    cfg = copy.deepcopy(base)
    cfg["output_dir"] = str(folder)
    cfg["al"].update(strategy=strategy, **al)
    cfg["al"].setdefault("precision", "fp32")  # compared with fp32 references (auto is bf16 where the CPU has it)
    return cfg


def _direct(cfg: dict) -> dict[str, np.ndarray]:
    """Every pool example's embedding computed directly: the base model, one unpadded prompt at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = build_config(cfg)
    task = build_task(config.task)
    pool = task.load("pool")
    tok = AutoTokenizer.from_pretrained(config.model.name)
    model = AutoModelForCausalLM.from_pretrained(config.model.name, dtype=torch.float32).eval()
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in pool], config.train.max_prompt_tokens,
                             system=task.system_prompt)
    with torch.no_grad():
        return {e.id: model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[-1][0].mean(0).numpy()
                for e, p in zip(pool, prompts)}


def _labelled_before(run: RunDir, t: int, pool_order: list[str]) -> list[str]:
    store = LabelStore(run.labels_path)
    labelled = {lab.example_id for lab in store.all() if lab.round < t}
    store.close()
    return [i for i in pool_order if i in labelled]


def _file_ids(run: RunDir, t: int) -> list[str]:
    return read_embedding_file(run.embeddings_path(t))[0] if run.embeddings_path(t).exists() else []


def _choice_task(folder: Path) -> dict:
    """A closed task (yes / no) in a JSON-lines file, for al.response=options."""
    folder.mkdir()
    for split, size in (("train", 30), ("test", 6)):
        rows = [{"question": f"Is {i} larger than {i % 7}?", "answer": "yes" if i > i % 7 else "no"} for i in range(size)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"name": "jsonl", "path": str(folder), "pool_size": 24, "test_size": 6, "answer_type": "choice",
            "choices": ["yes", "no"]}


@pytest.mark.parametrize("response", ["generated", "gold", "options"])  # prefill, teacher-forced pairs, prompt pass
def test_the_strategy_gets_the_base_models_embeddings_of_candidates_and_labels(tiny_run_config, tmp_path, forwards,
                                                                                response: str) -> None:
    """pe-dynamic's base pass over the whole pool (round 0) captures every row: no extra forward, one file."""
    cfg = _config(tiny_run_config, tmp_path / "run", RecordingDynamic.name, score_subsample=None, response=response)
    if response == "options":
        cfg["task"] = _choice_task(tmp_path / "data")
    loop.run(cfg, show_progress=False)
    run, want = RunDir(tmp_path / "run"), _direct(cfg)
    order = list(want)
    assert forwards == []  # all from the base pass
    assert sorted(_file_ids(run, 0)) == sorted(order) and _file_ids(run, 1) == _file_ids(run, 2) == []
    assert len(Recording.seen) == 2  # rounds 1 and 2 (round 0 is a random draw)
    for t, x in enumerate(Recording.seen, start=1):
        ids = [r["id"] for r in read_jsonl(run.scores_path(t))]
        labelled = _labelled_before(run, t, order)
        assert x.embeddings.shape == (len(ids), 32) and x.labelled_embeddings.shape == (len(labelled), 32)
        np.testing.assert_allclose(x.embeddings, np.stack([want[i] for i in ids]), atol=ATOL, rtol=0)
        np.testing.assert_allclose(x.labelled_embeddings, np.stack([want[i] for i in labelled]), atol=ATOL, rtol=0)


def test_subsampled_scoring_embeds_round_0_labels_with_one_prompt_only_forward(tiny_run_config, tmp_path,
                                                                               forwards) -> None:
    """With al.score_subsample round 0 scores nothing: round 1 embeds its L0 labels alone, then only new rows."""
    cfg = _config(tiny_run_config, tmp_path / "run", RecordingDynamic.name, score_subsample=8)
    loop.run(cfg, show_progress=False)
    run, want = RunDir(tmp_path / "run"), _direct(cfg)
    assert forwards == [cfg["al"]["initial"]]  # L0, once
    assert _file_ids(run, 0) == []
    one, two = _file_ids(run, 1), _file_ids(run, 2)
    assert len(one) == 8 + cfg["al"]["initial"] and not set(one) & set(two)  # each row once per run
    candidates_2 = {r["id"] for r in read_jsonl(run.scores_path(2))}
    assert set(two) == candidates_2 - set(one)  # round 2 computes only what round 1 had not
    x = Recording.seen[-1]
    ids = [r["id"] for r in read_jsonl(run.scores_path(2))]
    np.testing.assert_allclose(x.embeddings, np.stack([want[i] for i in ids]), atol=ATOL, rtol=0)
    labelled = _labelled_before(run, 2, list(want))
    np.testing.assert_allclose(x.labelled_embeddings, np.stack([want[i] for i in labelled]), atol=ATOL, rtol=0)


def test_a_plain_strategy_does_no_embedding_work(tiny_run_config, tmp_path, forwards, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a plain pe-dynamic run computed an embedding")

    monkeypatch.setattr(engine_embeddings, "masked_mean", refuse)
    loop.run(_config(tiny_run_config, tmp_path / "run", "pe-dynamic"), show_progress=False)
    assert forwards == [] and not list((tmp_path / "run").glob("round-*/embeddings.npz"))


@pytest.fixture
def reference(tiny_run_config, tmp_path) -> tuple[list[ScoreInputs], list[list[dict]]]:
    """An uninterrupted run of the stand-in (no base term: every row from the prompt-only forward)."""
    cfg = _config(tiny_run_config, tmp_path / "reference", Recording.name)
    loop.run(cfg, show_progress=False)
    run = RunDir(tmp_path / "reference")
    seen = list(Recording.seen)
    Recording.seen.clear()
    return seen, [read_jsonl(run.scores_path(t)) for t in run.finished_rounds()]


@pytest.mark.parametrize(("crash_at", "forwards_on_resume"), [
    ("write_scores", 0),  # round 1's embeddings are in the cache; its selection is not: read, not recomputed
    ("prompt_embeddings", 1),  # killed while embedding: nothing cached, the resumed round computes them
])
def test_a_resumed_run_selects_with_the_same_embeddings(tiny_run_config, tmp_path, monkeypatch, reference, forwards,
                                                        crash_at: str, forwards_on_resume: int) -> None:
    seen_ref, scores_ref = reference
    cfg = _config(tiny_run_config, tmp_path / "crashed", Recording.name)
    target = RunDir if crash_at == "write_scores" else loop_embeddings
    original, calls = getattr(target, crash_at), []

    def crash(*args, **kwargs):
        calls.append(1)
        if crash_at == "prompt_embeddings" or len(calls) == 2:  # write_scores: round 0's passes, round 1's crashes
            raise Crash(crash_at)
        return original(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(target, crash_at, crash)
        with pytest.raises(Crash):
            loop.run(cfg, show_progress=False)
    forwards.clear()
    Recording.seen.clear()
    loop.run(resume=tmp_path / "crashed", show_progress=False)
    assert len(forwards) == forwards_on_resume
    run = RunDir(tmp_path / "crashed")
    assert [read_jsonl(run.scores_path(t)) for t in run.finished_rounds()] == scores_ref
    seen = Recording.seen[-2:]  # rounds 1 and 2 of the resumed process
    for x, y in zip(seen, seen_ref):
        np.testing.assert_array_equal(x.embeddings, y.embeddings)
        np.testing.assert_array_equal(x.labelled_embeddings, y.labelled_embeddings)
