"""Re-evaluate one finished run's round with today's code and compare with what the run recorded.

Loads the run's stored config and round-<t>/adapter, evaluates the same test set the same way
(`engine.evaluation.evaluate`, the run's eval.mode), and prints, as JSON: identical outputs and
correctness against round-<t>/predictions.jsonl, the largest confidence difference, and accuracy and
ECE then and now. Used to check that a code change moves no answer before a grid's cells switch to it.

    python bench/reevaluate_cell.py runs/arithmetic-evidence/pe-dynamic/seed-0 --round 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from star.config import load_config
from star.engine.adapter import load_adapter_weights
from star.engine.batching import encode_prompts
from star.engine.evaluation import evaluate
from star.engine.modeling import load_model
from star.store.io import read_jsonl
from star.tasks import build_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished run's folder")
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    cfg = load_config(args.run / "config.yaml")
    cfg.model.threads = args.threads
    loaded = load_model(cfg.model, cfg.lora, show_progress=False)
    folder = args.run / f"round-{args.round}"
    load_adapter_weights(loaded.model, folder / "adapter")
    task = build_task(cfg.task)
    test = task.load("test")
    prompts = encode_prompts(loaded.tokenizer, [task.prompt(e.question) for e in test], cfg.train.max_prompt_tokens,
                             system=task.system_prompt)
    start = time.perf_counter()
    result = evaluate(loaded.model, loaded.tokenizer, task, test, prompts, cfg.eval, show_progress=False,
                      mode=cfg.eval.resolved_mode(cfg.task), max_answer_tokens=cfg.train.max_answer_tokens)
    seconds = time.perf_counter() - start
    old, new = read_jsonl(folder / "predictions.jsonl"), result.predictions
    recorded = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    print(json.dumps({
        "run": str(args.run), "round": args.round, "n": len(new), "seconds": round(seconds, 1),
        "recorded_eval_seconds": round(recorded["seconds"]["eval"], 1),
        "identical_outputs": sum(a.get("output") == b.get("output") and a["prediction"] == b["prediction"]
                                 for a, b in zip(old, new)),
        "identical_correct": sum(a["correct"] == b["correct"] for a, b in zip(old, new)),
        "max_abs_confidence_diff": max(abs(a["confidence"] - b["confidence"]) for a, b in zip(old, new)),
        "accuracy": [recorded["accuracy"], result.accuracy], "ece": [recorded["ece"], result.ece],
    }))


if __name__ == "__main__":
    main()
