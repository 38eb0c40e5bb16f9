"""Where a round's training time goes, against the matmul ceiling (issue #16's half-time target).

Trains N built-in arithmetic pairs (the default run's last round has 64) for one epoch on the
embedded model, as `star run` does (bf16 autocast where fast), under `torch.profiler`, after an
untimed warm-up training. Prints:
- the seconds, the useful GFLOP/s (2 x the forward's FLOPs, as bench/round_speed.py counts
  training) and their share of the best measured matmul rate in training's dtype;
- the profile's self time by operator group: matmul, attention, dropout draws, dtype casts,
  the loss, the rest.
The matmul and attention kernels' own seconds are what training would take if everything around
them cost nothing. Shares are of the operators' self time on the threads the profiler sees (dropout
masks drawn on a pool of worker threads are not among them; their wait is the gap to the wall
seconds). Writes JSON.

    python bench/train_profile.py --n 64 --threads 2 --out docs/results/bench/train_profile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import round_speed as rs
import speedlib

from star.engine import training

GROUPS = {  # operator name fragments -> group (first match wins)
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"),
    "attention": ("scaled_dot_product", "flash_attention"),
    "dropout draws": ("aten::uniform_", "aten::ge", "aten::lt"),
    "dtype casts": ("aten::copy_", "aten::_to_copy"),
    "loss": ("log_softmax", "nll_loss"),
}


def group_of(name: str) -> str:
    return next((g for g, keys in GROUPS.items() if any(k in name for k in keys)), "rest")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64, help="labelled pairs trained on (one epoch)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/results/train_profile.json")
    args = p.parse_args()
    b = rs.setup(rs.parse_args(["--task", "arithmetic", "--n-score", "1", "--n-train", str(args.n), "--n-eval", "1",
                                "--epochs", "1", "--threads", str(args.threads)]))
    prompts, responses = b.train.prompts, b.train.responses
    training.train_adapter(b.model, prompts[:16], responses[:16], b.pad_id, b.train_cfg, 0, show_progress=False)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        stats = training.train_adapter(b.model, prompts, responses, b.pad_id, b.train_cfg, 0, show_progress=False)
        seconds = time.perf_counter() - start
    groups: dict[str, float] = {}
    rest: dict[str, float] = {}
    for event in prof.key_averages():
        group = group_of(event.key)
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e6
        if group == "rest":
            rest[event.key] = event.self_cpu_time_total / 1e6
    total = sum(groups.values())
    top_rest = {k: round(100 * v / total, 1) for k, v in sorted(rest.items(), key=lambda kv: -kv[1])[:8]}
    dtype = torch.bfloat16 if stats.precision == "bf16" else torch.float32
    cfg = b.model.get_base_model().config
    ceiling = speedlib.ceiling(cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, b.device, dtypes=(dtype,))
    best = ceiling[str(dtype).removeprefix("torch.")]["best"]
    useful = 2 * b.flops.forward(b.train.lengths, b.train.response_tokens)
    shares = {g: round(100 * s / total, 1) for g, s in sorted(groups.items(), key=lambda kv: -kv[1])}
    result = {"pairs": args.n, "threads": args.threads, "precision": stats.precision, "seconds": round(seconds, 2),
              "tokens": sum(b.train.lengths), "useful_gflop": round(useful / 1e9, 1),
              "useful_gflops_per_s": round(useful / seconds / 1e9, 1), "ceiling_gflops_per_s": best,
              "pct_of_ceiling": round(100 * useful / seconds / 1e9 / best, 1), "self_time_pct": shares, "rest_top_pct": top_rest,
              "profiled_op_s": round(total, 2),  # operators' self time on the profiled threads
              "kernel_floor_s": round(groups.get("matmul", 0.0) + groups.get("attention", 0.0), 2),
              "machine": speedlib.machine_info(b.device)}
    print(f"{args.n} pairs, 1 epoch, {stats.precision}, {args.threads} threads: {seconds:.1f} s,"
          f" {result['useful_gflops_per_s']} useful GFLOP/s = {result['pct_of_ceiling']}% of the {best} GFLOP/s ceiling")
    print("| group | % of self time |\n|---|---:|")
    for g, share in shares.items():
        print(f"| {g} | {share} |")
    print("largest in the rest:", ", ".join(f"{k} {v}%" for k, v in top_rest.items()))
    print(f"matmul + attention alone: {result['kernel_floor_s']} s of {seconds:.1f} s"
          f" ({result['profiled_op_s']} s in profiled operators)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
