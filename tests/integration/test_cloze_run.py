"""A whole run of cloze-style OBQA: per-question options scored for selection and evaluation, option texts trained."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from star.config import load_stored_config
from star.loop import rounds
from star.store.io import read_jsonl
from star.store.runs import RunDir

WORDS = ["cat", "river stone", "salt", "blue sky", "an old oak", "ice", "the moon", "wet sand", "fog", "a fern", "iron"]


def _obqa_rows(n: int) -> list[dict]:
    """OBQA-shaped rows: a stem, then 'AnswerA: ...' to 'AnswerD: ...' (each question its own texts), gold a letter."""
    return [{"question": f"Item {i} is most like\n" + "".join(f"Answer{c}: {WORDS[(3 * i + j) % len(WORDS)]}\n"
                                                            for j, c in enumerate("ABCD")) + "The correct answer is ",
             "answer": "ABCD"[(i * 7) % 4]} for i in range(n)]


def _folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _obqa_rows(30)))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _obqa_rows(36)[30:]))
    return folder


def test_a_cloze_obqa_run_with_option_responses_finishes_two_rounds(tiny_run_config: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = copy.deepcopy(tiny_run_config)
    cfg["task"] = {"name": "obqa", "path": str(_folder(tmp_path / "data")), "pool_size": 24, "test_size": 6,
                   "option_style": "cloze"}
    cfg["al"].update({"rounds": 2, "response": "options", "strategy": "pe-dynamic"})
    trained: list[list[str]] = []  # the training targets of each round
    encode = rounds.encode_responses

    def spy(tok: object, texts: list[str], max_tokens: int) -> list[list[int]]:
        trained.append(list(texts))
        return encode(tok, texts, max_tokens)

    monkeypatch.setattr(rounds, "encode_responses", spy)
    metrics = rounds.run(cfg, show_progress=False)
    assert [m["eval_mode"] for m in metrics] == ["options", "options"] and len(metrics) == 2
    texts = {w for r in _obqa_rows(30) for w in WORDS if f": {w}\n" in r["question"]}
    assert trained and all(t in texts for batch in trained for t in batch)  # option texts, never letters
    assert len(trained[-1]) == 8  # 4 initial + 4 queried labels
    folder = RunDir(cfg["output_dir"])
    rows = read_jsonl(folder.predictions_path(1))
    gold = {f"obqa-test-{i + 1}": r["answer"] for i, r in enumerate(_obqa_rows(36)[30:])}
    assert len(rows) == 6 and all(r["prediction"] in "ABCD" and len(r["option_logprobs"]) == 4 for r in rows)
    assert all(r["correct"] == (r["prediction"] == gold[r["id"]]) for r in rows)
    assert len(read_jsonl(folder.base_scores_path)) > 0  # u_base scored on each question's own options
    assert load_stored_config(folder.config_path).task.option_style == "cloze"


def test_a_run_recorded_before_option_style_resumes_with_letters(tmp_path: Path) -> None:
    stored = {"task": {"name": "obqa", "path": "d"}, "eval": {"mode": "auto"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(stored))
    assert load_stored_config(path).task.option_style == "letter"
