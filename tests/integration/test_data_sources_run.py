"""A whole tiny run from one Parquet file: a held-out test set, a prompt template and a system prompt."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

import star.loop
from star.loop import run
from star.store.io import read_jsonl
from star.store.labels import LabelStore
from star.store.runs import RunDir

datasets = pytest.importorskip("datasets")


def test_a_run_from_a_parquet_file(tiny_run_config: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    rows = [{"passage": f"{i} apples.", "q": f"Are there more than {i % 7} apples?", "label": i > i % 7} for i in range(40)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "apples.parquet"))
    cfg = copy.deepcopy(tiny_run_config)
    cfg["task"] = {"name": "boolq", "path": str(tmp_path / "apples.parquet"), "answer_field": "label",
                   "prompt_template": "Passage: {passage}\nQuestion: {q}", "system_prompt": "Answer true or false.",
                   "pool_size": 24, "test_size": 6}
    cfg["al"]["rounds"] = 2
    cfg["train"]["max_prompt_tokens"] = 160  # byte tokens: the whole prompt, system message included (cut from the left)
    seen: list[tuple[list[str], str | None]] = []
    encode = star.loop.experiment.encode_prompts

    def recording(tok, prompts, max_tokens, system=None):
        ids = encode(tok, prompts, max_tokens, system=system)
        seen.append(([tok.decode(x) for x in ids], system))
        return ids

    monkeypatch.setattr(star.loop.experiment, "encode_prompts", recording)
    metrics = run(cfg, show_progress=False)
    assert len(metrics) == 2 and all(m["n_test"] == 6 for m in metrics)
    folder = RunDir(cfg["output_dir"])
    tested = {r["id"] for r in read_jsonl(folder.predictions_path(1))}
    store = LabelStore(folder.labels_path)
    labelled = {lab.example_id for lab in store.all()}
    store.close()
    assert len(tested) == 6 and len(labelled) == 8 and not tested & labelled  # held out: never labelled
    assert all(i.startswith("boolq-apples-") for i in tested | labelled)
    pool_texts, system = seen[0]
    assert system == "Answer true or false."
    assert pool_texts[0].startswith("<system>Answer true or false.\n<user>Passage: ") and "\nQuestion: Are there" in pool_texts[0]
    assert run(resume=folder.path, show_progress=False) == metrics  # the stored config finds the same data
