"""Does bf16 scoring move the ranking more than MC dropout already does?

Trains an adapter on n_train GSM8K pairs, then scores n_score pool pairs (gold responses, K MC
passes) three times: fp32 with seed 0, fp32 with seed 1 (MC noise alone), and bf16 autocast
with seed 0 (precision alone). Prints Spearman rank correlations and top-k overlaps of the
mean PE, and writes them as JSON. If bf16 perturbs the ranking far less than a second MC draw
does, scoring in bf16 costs the selection nothing measurable.

    python bench/precision_vs_mc_noise.py --n-score 48 --n-train 16 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from star.config import LoraSettings, ModelConfig, TaskConfig, TrainConfig
from star.engine.adapter import reset_adapter
from star.engine.batching import encode_prompts, encode_responses
from star.engine.modeling import load_model
from star.engine.scoring import score_pairs
from star.engine.training import train_adapter
from star.tasks import build_task


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    return len(set(np.argsort(-a)[:k]) & set(np.argsort(-b)[:k])) / k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/datasets/GSM8K")
    p.add_argument("--n-score", type=int, default=48)
    p.add_argument("--n-train", type=int, default=16)
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="bench/results/precision_vs_mc_noise.json")
    args = p.parse_args()
    if not (Path(args.data) / "train.jsonl").is_file():
        print(f"skipped: no GSM8K data at {args.data}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    m = load_model(ModelConfig(), LoraSettings())
    task = build_task(TaskConfig(name="gsm8k", path=args.data, pool_size=args.n_score + args.n_train, test_size=1))
    pool = task.load("pool")
    cfg = TrainConfig(epochs=2)
    prompts = encode_prompts(m.tokenizer, [task.prompt(e.question) for e in pool], cfg.max_prompt_tokens)
    responses = encode_responses(m.tokenizer, [task.target_for(e, e.answer) for e in pool], cfg.max_answer_tokens)
    pad = m.tokenizer.pad_token_id or 0
    n = args.n_train
    reset_adapter(m.model, 0)
    train_adapter(m.model, prompts[:n], responses[:n], pad, cfg, seed=0, show_progress=False)
    P, R = prompts[n:], responses[n:]
    runs, seconds = {}, {}
    for name, seed, amp in (("fp32_seed0", 0, False), ("fp32_seed1", 1, False), ("bf16_seed0", 0, True)):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            u = score_pairs(m.model, P, R, pad, 32, passes=args.passes, seed=seed, show_progress=False)
        runs[name], seconds[name] = u.pe.mean(axis=1), time.perf_counter() - start
    k = max(1, len(P) // 4)
    ref = runs["fp32_seed0"]
    result = {
        "n_score": len(P), "passes": args.passes, "top_k": k, "seconds": seconds,
        "max_rel_diff_bf16": float(np.max(np.abs(runs["bf16_seed0"] - ref) / np.abs(ref))),
        "spearman": {"mc_noise (fp32 seed0 vs seed1)": spearman(ref, runs["fp32_seed1"]),
                     "precision (fp32 vs bf16, seed0)": spearman(ref, runs["bf16_seed0"])},
        f"top_{k}_overlap": {"mc_noise": overlap(ref, runs["fp32_seed1"], k), "precision": overlap(ref, runs["bf16_seed0"], k)},
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
