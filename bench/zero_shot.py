"""Zero-shot accuracy of the base model (no adapter) by option likelihood, as lm-evaluation-harness scores closed tasks.

For each test question, log p(option target | prompt) of every answer option, the prompt in
star's format (the chat template, prompts cut to train.max_prompt_tokens); acc = argmax,
acc_norm = argmax of log-likelihood per character. Prints a table and writes JSON.
`--compare-paths N` also times the shared-prefix scoring against C full (prompt + option)
rows on the first N questions and reports the largest difference between the two.

    python bench/zero_shot.py --task obqa --path ../shared/datasets/OBQA
    python bench/zero_shot.py --task boolq --path ../shared/datasets/BoolQ --limit 1000
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from star.config import DEFAULT_MODEL, EvalConfig, ModelConfig, TaskConfig, TrainConfig
from star.engine.batching import encode_prompts, encode_responses
from star.engine.evaluation import evaluate
from star.engine.modeling import load_base
from star.engine.scoring import full_pair_logprobs, option_logprobs
from star.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["obqa", "boolq"], required=True)
    ap.add_argument("--path", required=True, help="folder with test.jsonl")
    ap.add_argument("--limit", type=int, default=None, help="the first N test questions (default: all)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-prompt-tokens", type=int, default=TrainConfig().max_prompt_tokens)
    ap.add_argument("--option-style", choices=["letter", "cloze"], default="letter",
                    help="obqa's task.option_style (default letter, as recorded; bench/obqa_option_style.py compares)")
    ap.add_argument("--compare-paths", type=int, default=0, metavar="N", help="time shared prefix vs full pairs on N")
    ap.add_argument("--out", default=None, help="JSON file (default docs/results/bench/zero_shot_<task>.json)")
    return ap.parse_args()


def _compare_paths(model: torch.nn.Module, prompts: list[list[int]], options: list[list[int]], pad_id: int,
                   batch_size: int) -> dict:
    """Seconds of the shared-prefix and the full-pair scoring of the same questions, and their largest difference."""
    t0 = time.perf_counter()
    shared = option_logprobs(model, prompts, options, pad_id, batch_size, show_progress=False)
    t1 = time.perf_counter()
    full = full_pair_logprobs(model, prompts, options, pad_id, batch_size, show_progress=False)
    t2 = time.perf_counter()
    return {"n": len(prompts), "shared_prefix_s": round(t1 - t0, 2), "full_pairs_s": round(t2 - t1, 2),
            "speedup": round((t2 - t1) / max(t1 - t0, 1e-9), 2), "max_abs_diff": float(np.abs(shared - full).max())}


def main() -> None:
    args = _args()
    torch.set_num_threads(args.threads)
    task = build_task(TaskConfig(name=args.task, path=args.path, test_size=10**9,  # every line, in file order
                                 option_style=args.option_style))
    test = task.load("test")[: args.limit]
    model, tok, device, _ = load_base(ModelConfig(name=args.model, threads=args.threads))
    texts = [task.prompt(e.question) for e in test]
    prompts = encode_prompts(tok, texts, args.max_prompt_tokens)
    cut = sum(len(p) == args.max_prompt_tokens for p in prompts)
    clock = time.perf_counter()
    result = evaluate(model, tok, task, test, prompts, EvalConfig(batch_size=args.batch_size), mode="options")
    seconds = time.perf_counter() - clock
    gold = [task.gold_answer(e.answer or "") for e in test]
    picked = [r["prediction"] for r in result.predictions]
    row = {
        "task": args.task, "model": args.model, "adapter": None, "n": len(test), "acc": result.accuracy,
        "acc_norm": result.accuracy_norm, "ece": result.ece, "mean_confidence": result.mean_confidence,
        "majority_rate": max(gold.count(c) for c in task.choices) / len(gold),
        "predicted_share": {c: picked.count(c) / len(picked) for c in task.choices},
        "options": task.choice_texts_for(test[0]), "option_style": args.option_style, "prompts_cut_to_max": cut,
        "max_prompt_tokens": args.max_prompt_tokens,
        "eval_seconds": round(seconds, 1), "threads": args.threads, "device": str(device),
        "torch": torch.__version__, "cpus": os.cpu_count(),
    }
    if args.compare_paths:
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        options = [encode_responses(tok, task.choice_texts_for(e), TrainConfig().max_answer_tokens)
                   for e in test[: args.compare_paths]]  # (N, C): each question's own options
        row["paths"] = _compare_paths(model, prompts[: args.compare_paths], options, pad_id, args.batch_size)
    print(f"| task | n | acc | acc_norm | ECE | majority | eval s |\n|---|---|---|---|---|---|---|\n"
          f"| {args.task} | {row['n']} | {row['acc']:.3f} | {row['acc_norm']:.3f} | {row['ece']:.3f} |"
          f" {row['majority_rate']:.3f} | {row['eval_seconds']} |")
    print(json.dumps({k: v for k, v in row.items() if k in ("predicted_share", "prompts_cut_to_max", "paths")}))
    out = Path(args.out) if args.out else ROOT / "docs" / "results" / "bench" / f"zero_shot_{args.task}.json"
    out.write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
