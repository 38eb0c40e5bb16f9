"""Greedy decoding (issue #16 part 2): `model.generate` against star's loop (engine/decode.py), on evaluation prompts.

Three ways to answer the same prompts with the same model, alternately, `--repeats` times (seconds: the
minimum): `generate` (transformers' loop, finished rows padded until the batch's longest answer ends), `loop`
(finished rows dropped from the batch), `loop+prefix` (that, and the prompts' common prefix, e.g. the chat
template's system turn, run once; star's default). Answers are compared with `generate`'s: identical token
ids, and the largest |difference| of a token's log-probability. Prints a table, writes JSON with `--out`.

    python bench/decode_speed.py --n 64 --threads 1 --repeats 2 --out docs/results/bench/decode_speed.json
    python bench/decode_speed.py --adapter runs/arithmetic-evidence/random/seed-0/round-3/adapter   # a tuned model
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from star.config import LoraSettings, ModelConfig, TaskConfig, TrainConfig
from star.engine import decode, generation
from star.engine.adapter import load_adapter_weights
from star.engine.batching import encode_prompts
from star.engine.decode import common_prefix
from star.engine.generation import Generation, generate
from star.engine.modeling import load_model
from star.tasks import build_task

ARMS = ("generate", "loop", "loop+prefix")


@contextmanager
def arm(name: str) -> Iterator[None]:
    """Within the block, `generate` decodes the way `name` says."""
    plain, shared = generation.plain_greedy, decode.MIN_SHARED_PREFIX
    if name == "generate":
        generation.plain_greedy = lambda model: False
    elif name == "loop":
        decode.MIN_SHARED_PREFIX = 10**9
    try:
        yield
    finally:
        generation.plain_greedy, decode.MIN_SHARED_PREFIX = plain, shared


def agreement(got: list[Generation], want: list[Generation]) -> dict[str, float]:
    same = [g.token_ids == w.token_ids for g, w in zip(got, want)]
    diffs = [abs(a - b) for g, w in zip(got, want) if g.token_ids == w.token_ids for a, b in zip(g.logprobs, w.logprobs)]
    return {"identical_answers": float(np.mean(same)), "max_abs_logprob_diff": float(max(diffs, default=0.0))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="test prompts answered")
    p.add_argument("--task", default="arithmetic", help="task.name (gsm8k/boolq/obqa need --task-path)")
    p.add_argument("--task-path", default=None)
    p.add_argument("--adapter", default=None, help="a run's round-<t>/adapter folder (default: the base model)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(ModelConfig(), LoraSettings(), show_progress=False)
    if args.adapter:
        load_adapter_weights(loaded.model, Path(args.adapter))
    model, tok = loaded.model, loaded.tokenizer
    task = build_task(TaskConfig(name=args.task, path=args.task_path, test_size=max(args.n, TaskConfig().test_size)))
    test = task.load("test")[: args.n]
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in test], TrainConfig().max_prompt_tokens,
                             system=task.system_prompt)
    seconds: dict[str, list[float]] = {a: [] for a in ARMS}
    answers: dict[str, list[Generation]] = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name in ARMS:
                with arm(name):
                    start = time.perf_counter()
                    answers[name] = generate(model, tok, prompts, args.max_new_tokens, args.batch_size,
                                             task.answer_complete, show_progress=False, stats=True)
                    seconds[name].append(time.perf_counter() - start)
    tokens = sum(len(g.token_ids) for g in answers["generate"])
    rows = {a: {"seconds": min(seconds[a]), "answer_tokens_per_s": tokens / min(seconds[a]),
                "speedup": min(seconds["generate"]) / min(seconds[a]), **agreement(answers[a], answers["generate"])}
            for a in ARMS}
    result = {"task": args.task, "n": len(prompts), "adapter": args.adapter, "threads": torch.get_num_threads(),
              "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens, "answer_tokens": tokens,
              "mean_prompt_tokens": float(np.mean([len(x) for x in prompts])), "common_prefix_tokens": common_prefix(prompts),
              "arms": rows, "seconds_all": seconds}
    print(f"{args.task}: {len(prompts)} prompts (mean {result['mean_prompt_tokens']:.1f} tokens, "
          f"{result['common_prefix_tokens']} shared), {tokens} answer tokens, {torch.get_num_threads()} threads")
    print("| decoding | seconds | answer tok/s | speed-up | identical answers | max abs logprob diff |")
    print("|---|---:|---:|---:|---:|---:|")
    for a, r in rows.items():
        print(f"| {a} | {r['seconds']:.1f} | {r['answer_tokens_per_s']:.1f} | {r['speedup']:.2f}x | "
              f"{r['identical_answers']:.3f} | {r['max_abs_logprob_diff']:.1e} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
