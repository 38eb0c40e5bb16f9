"""Scores from the generation pass (issue #16 part 1): the base model's u_base pass of one round, before and after.

Before: greedy generation, then a second, teacher-forced forward over prompt + answer (score_pairs).
After: greedy_uncertainty, PE/ME taken from the generation's own step logits, no second forward.
Both score the same candidates with the same model in the same process, alternately, `--repeats`
times; it prints the seconds (min over repeats; "after_step_statistics": the part of "after" spent
computing the step statistics), the decoder forwards and tokens each path runs, and
the largest |after - before| of PE and ME, and writes them as JSON with `--out`.

    python bench/fused_scores.py --n 32 --threads 2 --repeats 2 --out /tmp/fused.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from star.config import ActiveLearningConfig, LoraSettings, ModelConfig, TaskConfig, TrainConfig
from star.engine import generation
from star.engine.adapter import adapter_disabled
from star.engine.batching import encode_prompts
from star.engine.forward import decoder_and_head
from star.engine.generation import generate
from star.engine.modeling import load_model
from star.engine.precision import autocast
from star.engine.scoring import greedy_uncertainty, score_pairs
from star.tasks import build_task


class Counter:
    """Decoder forwards and the tokens (rows x width) they run, by phase."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        self.phase, self.calls, self.tokens = "", {}, {}
        decoder.register_forward_hook(self._count, with_kwargs=True)

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
        n = int(ids.numel()) if ids is not None else int(kwargs["inputs_embeds"].shape[:2].numel())
        self.calls[self.phase] = self.calls.get(self.phase, 0) + 1
        self.tokens[self.phase] = self.tokens.get(self.phase, 0) + n


def time_step_statistics() -> list[float]:
    """Seconds spent in the fused statistics' per-step processor (accumulated into the returned one-item list)."""
    spent, call = [0.0], generation._StepStats.__call__

    def timed_call(self: generation._StepStats, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = call(self, input_ids, scores)
        spent[0] += time.perf_counter() - start
        return out

    generation._StepStats.__call__ = timed_call
    return spent


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32, help="candidates scored (al.score_subsample's default: 32)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    al, train = ActiveLearningConfig(), TrainConfig()
    loaded = load_model(ModelConfig(), LoraSettings(), show_progress=False)
    model, tok = loaded.model, loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    task = build_task(TaskConfig())
    pool = task.load("pool")[: args.n]
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in pool], train.max_prompt_tokens,
                             system=task.system_prompt)
    counter, step_stats = Counter(decoder_and_head(model)[0]), time_step_statistics()
    kw = {"show_progress": False}

    def before() -> tuple[np.ndarray, np.ndarray]:
        counter.phase = "before: generate"
        gens = generate(model, tok, prompts, al.max_new_tokens, al.batch_size, task.answer_complete, **kw)
        counter.phase = "before: score"
        start = time.perf_counter()
        u = score_pairs(model, prompts, [g.token_ids or [tok.eos_token_id] for g in gens], pad, al.batch_size, **kw)
        counter.score_s = time.perf_counter() - start
        return u.pe[:, 0], u.me[:, 0]

    def after() -> tuple[np.ndarray, np.ndarray]:
        counter.phase = "after: generate"
        u = greedy_uncertainty(model, tok, prompts, pad, al.max_new_tokens, al.batch_size, task.answer_complete, **kw)
        return u.pe[:, 0], u.me[:, 0]

    seconds: dict[str, list[float]] = {"before": [], "before_score_forward": [], "after": [], "after_step_statistics": []}
    with torch.no_grad(), adapter_disabled(model), autocast(args.precision, loaded.device):
        for _ in range(args.repeats):
            counter.calls, counter.tokens = {}, {}
            s, old = timed(before)
            seconds["before"].append(s)
            seconds["before_score_forward"].append(counter.score_s)
            step_stats[0] = 0.0
            s, new = timed(after)
            seconds["after"].append(s)
            seconds["after_step_statistics"].append(step_stats[0])
    result = {
        "n": args.n, "threads": torch.get_num_threads(), "precision": args.precision,
        "max_new_tokens": al.max_new_tokens, "batch_size": al.batch_size,
        "seconds_min": {k: min(v) for k, v in seconds.items()}, "seconds_all": seconds,
        "decoder_forwards": counter.calls, "decoder_tokens": counter.tokens,
        "max_abs_diff": {"pe": float(np.abs(new[0] - old[0]).max()), "me": float(np.abs(new[1] - old[1]).max())},
        "max_rel_diff": {"pe": float((np.abs(new[0] - old[0]) / np.abs(old[0])).max()),
                         "me": float((np.abs(new[1] - old[1]) / np.abs(old[1])).max())},
        "note": "measured on a shared, busy machine (another job computing on the same 2 cores)",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
