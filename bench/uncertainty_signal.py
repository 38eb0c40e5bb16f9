"""Which uncertainty finds the examples the model gets wrong? AUROC of PE and ME vs. error.

Used to choose the default strategy (pe-dynamic vs entropy-dynamic): for the base model and
for a LoRA model trained on a small random set, score n pool examples on the model's own
greedy answer (label-free) and measure how well each score ranks wrong answers above right
ones. Prints a table and writes JSON.

    python bench/uncertainty_signal.py --n 96 --train 32 --out bench/results/uncertainty_signal.json

`star probe` measures the same AUROC (and more: u_base and u_full, several label counts, calibration)
as a command; this script stays as the record of how the default was chosen.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from star.al.ranking import auroc
from star.config import RunConfig
from star.engine.adapter import adapter_disabled, reset_adapter
from star.engine.batching import encode_prompts, encode_responses
from star.engine.generation import generate
from star.engine.modeling import load_model
from star.engine.scoring import score_pairs
from star.engine.training import train_adapter
from star.tasks import build_task


def measure(model, tok, task, examples, prompts, cfg: RunConfig, mc: bool) -> dict:
    gens = generate(model, tok, prompts, cfg.al.max_new_tokens, cfg.al.batch_size, is_complete=task.answer_complete)
    wrong = np.array([not task.is_correct(task.extract(g.text), e.answer) for e, g in zip(examples, gens)])
    u = score_pairs(model, prompts, [g.token_ids or [tok.eos_token_id] for g in gens], tok.pad_token_id,
                    cfg.al.batch_size, passes=cfg.al.mc_passes if mc else 1, seed=1)
    pe, me = u.pe.mean(1), u.me.mean(1)
    return {"error_rate": float(wrong.mean()), "auroc_pe": auroc(pe, wrong), "auroc_me": auroc(me, wrong)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=96, help="pool examples scored")
    parser.add_argument("--train", type=int, default=32, help="random labels for the tuned model")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default="bench/results/uncertainty_signal.json")
    args = parser.parse_args()
    cfg = RunConfig.model_validate({"task": {"pool_size": args.n + args.train, "test_size": 1}})
    loaded = load_model(cfg.model, cfg.lora)
    model, tok = loaded.model, loaded.tokenizer
    task = build_task(cfg.task)
    pool = task.load("pool")
    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        train, scored = [pool[i] for i in order[: args.train]], [pool[i] for i in order[args.train :]]
        prompts = encode_prompts(tok, [task.prompt(e.question) for e in scored], cfg.train.max_prompt_tokens)
        start = time.perf_counter()
        with adapter_disabled(model):
            rows.append({"seed": seed, "model": "base", **measure(model, tok, task, scored, prompts, cfg, mc=False)})
        reset_adapter(model, seed)
        tp = encode_prompts(tok, [task.prompt(e.question) for e in train], cfg.train.max_prompt_tokens)
        tr = encode_responses(tok, [task.target_for(e, e.answer) for e in train], cfg.train.max_answer_tokens)
        train_adapter(model, tp, tr, tok.pad_token_id, cfg.train, seed)
        rows.append({"seed": seed, "model": f"lora ({args.train} labels, MC K={cfg.al.mc_passes})",
                     **measure(model, tok, task, scored, prompts, cfg, mc=True)})
        print(f"seed {seed}: {time.perf_counter() - start:.0f}s")
    print(f"{'seed':>4} {'model':<32} {'error':>6} {'AUROC PE':>9} {'AUROC ME':>9}")
    for r in rows:
        print(f"{r['seed']:>4} {r['model']:<32} {r['error_rate']:>6.3f} {r['auroc_pe']:>9.3f} {r['auroc_me']:>9.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"n": args.n, "train": args.train, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
