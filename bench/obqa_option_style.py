"""Zero-shot OBQA by option likelihood in each `task.option_style`: letter against cloze, with 95% intervals.

The base model (no adapter) on the OBQA test set, evaluated as `star run` evaluates it
(`evaluate(..., mode="options")`, prompts through the chat template, cut to train.max_prompt_tokens):
letter scores the letters A-D after the whole question (options listed); cloze scores each
option's text after the question stem alone, as lm-evaluation-harness's openbookqa task.
acc = argmax log-likelihood, acc_norm = argmax per character. Intervals: percentile bootstrap over
the test items (star.experiments.bootstrap, 10,000 replicates, seed 0), the difference paired by item.
Two diagnostic cloze variants that star does not run show how close it comes to lm-eval's setup:
the option texts without EOS, and plain text without the chat template (stem, then " " + option).
Prints a table and writes JSON.

    python bench/obqa_option_style.py --path ../shared/datasets/OBQA --threads 1
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
from star.engine.batching import encode_prompts
from star.engine.evaluation import evaluate, option_choices
from star.engine.modeling import load_base
from star.engine.scoring import option_logprobs
from star.experiments.bootstrap import difference_interval, percentile_interval, replicate_means
from star.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
STYLES = ("letter", "cloze")  # task.option_style, evaluated as star evaluates
DIAGNOSTICS = ("cloze-no-eos", "cloze-plain")  # closer to lm-evaluation-harness; not star options
CARD_ACC = 0.346  # SmolLM2-135M (base) model card, OpenBookQA zero-shot (lighteval)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--path", required=True, help="folder with test.jsonl")
    ap.add_argument("--limit", type=int, default=None, help="the first N test questions (default: all)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "docs" / "results" / "obqa_option_style.json"))
    return ap.parse_args()


def _style_run(style: str, args: argparse.Namespace, model: torch.nn.Module, tok: object) -> tuple[dict, np.ndarray]:
    """(summary row, per-item correctness (2, n): acc then acc_norm) of one option style."""
    task = build_task(TaskConfig(name="obqa", path=args.path, test_size=10**9, option_style=style))
    test = task.load("test")[: args.limit]
    max_prompt = TrainConfig().max_prompt_tokens
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in test], max_prompt)
    clock = time.perf_counter()
    result = evaluate(model, tok, task, test, prompts, EvalConfig(batch_size=args.batch_size), mode="options")
    seconds = time.perf_counter() - clock
    correct = np.array([[p["correct"] for p in result.predictions],
                        [p["correct_norm"] for p in result.predictions]], dtype=np.float64)  # (2, n)
    picked = [p["prediction"] for p in result.predictions]
    row = {"style": style, "n": len(test), "acc": result.accuracy, "acc_norm": result.accuracy_norm,
           "ece": result.ece, "mean_confidence": result.mean_confidence,
           "predicted_share": {c: picked.count(c) / len(picked) for c in task.choices},
           "prompts_cut_to_max": sum(len(p) == max_prompt for p in prompts), "max_prompt_tokens": max_prompt,
           "example_prompt": task.prompt(test[0].question), "example_options": task.choice_texts_for(test[0]),
           "eval_seconds": round(seconds, 1)}
    return row, correct


def _diagnostic(name: str, args: argparse.Namespace, model: torch.nn.Module, tok: object) -> tuple[dict, np.ndarray]:
    """A cloze variant that star does not run, for comparison with lm-evaluation-harness: `cloze-no-eos` (star's
    cloze prompts, the option texts without EOS) or `cloze-plain` (no chat template: stem, then " " + option)."""
    task = build_task(TaskConfig(name="obqa", path=args.path, test_size=10**9, option_style="cloze"))
    test = task.load("test")[: args.limit]
    max_prompt = TrainConfig().max_prompt_tokens
    texts = [task.choice_texts_for(e) for e in test]  # (n, C)
    if name == "cloze-plain":
        prompts = [tok(task.prompt(e.question), add_special_tokens=False)["input_ids"][-max_prompt:] for e in test]
        texts = [[" " + t for t in row] for row in texts]
    else:
        prompts = encode_prompts(tok, [task.prompt(e.question) for e in test], max_prompt)
    options = [[tok(t, add_special_tokens=False)["input_ids"] for t in row] for row in texts]
    clock = time.perf_counter()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    logp = option_logprobs(model, prompts, options, pad, args.batch_size, desc=name)[:, :, 0]  # (n, C)
    pred, pred_norm, _ = option_choices(logp, [[len(t) for t in row] for row in texts])
    gold = np.array([task.choices.index(task.gold_answer(e.answer or "")) for e in test])  # (n,)
    correct = np.stack([pred == gold, pred_norm == gold]).astype(np.float64)  # (2, n)
    row = {"style": name, "n": len(test), "acc": float(correct[0].mean()), "acc_norm": float(correct[1].mean()),
           "diagnostic": True, "eval_seconds": round(time.perf_counter() - clock, 1)}
    return row, correct


def _intervals(rows: list[dict], correct: np.ndarray) -> None:
    """Add 95% bootstrap intervals over the items to each row, and each row's paired difference from the first."""
    reps = replicate_means([correct], shared_items=True)  # (B, 2 * rows)
    means = correct.mean(axis=1)  # (2 * rows,)
    for s, row in enumerate(rows):
        row["acc_ci"] = percentile_interval(reps[:, 2 * s])
        row["acc_norm_ci"] = percentile_interval(reps[:, 2 * s + 1])
        for k, name in enumerate(("acc", "acc_norm")) if s else ():
            row[f"{name}_minus_{rows[0]['style']}"] = difference_interval(
                means[2 * s + k] - means[k], reps[:, 2 * s + k] - reps[:, k])


def main() -> None:
    args = _args()
    started = time.perf_counter()
    model, tok, device, _ = load_base(ModelConfig(name=args.model, threads=args.threads))
    rows, per_item = [], []
    for style in STYLES + DIAGNOSTICS:
        row, correct = (_style_run if style in STYLES else _diagnostic)(style, args, model, tok)
        rows.append(row)
        per_item.append(correct)
    _intervals(rows, np.concatenate(per_item))  # (2 * styles, n)
    print("| style | n | acc [95%] | acc_norm [95%] | ECE | eval s |\n|---|---|---|---|---|---|")
    for r in rows:
        ece = f"{r['ece']:.3f}" if "ece" in r else "-"
        print(f"| {r['style']} | {r['n']} | {r['acc']:.3f} [{r['acc_ci'][0]:.3f}, {r['acc_ci'][1]:.3f}] |"
              f" {r['acc_norm']:.3f} [{r['acc_norm_ci'][0]:.3f}, {r['acc_norm_ci'][1]:.3f}] | {ece} |"
              f" {r['eval_seconds']} |")
    out = {"task": "obqa", "split": "test", "model": args.model, "adapter": None, "card_acc_base_model": CARD_ACC,
           "styles": rows, "bootstrap": {"resamples": 10_000, "seed": 0, "over": "test items"},
           "threads": args.threads, "device": str(device), "torch": torch.__version__, "cpus": os.cpu_count(),
           "quiet_cpu": False, "total_seconds": round(time.perf_counter() - started, 1),
           "command": "python bench/obqa_option_style.py --path ../shared/datasets/OBQA --threads 1",
           "per_item_correct": {r["style"]: {"acc": c[0].astype(int).tolist(), "acc_norm": c[1].astype(int).tolist()}
                                for r, c in zip(rows, per_item)}}
    print(json.dumps({r["style"]: {k: v for k, v in r.items() if "minus" in k} for r in rows}))
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
