"""What the prompt-embedding capture costs (issue #14 part 1): one base-model scoring pass with and without it.

The base model's u_base pass over `--n` candidates (greedy_uncertainty: generation with the statistics taken while
decoding), and the teacher-forced pass over the same answers (score_pairs), each with `embed=False` and
`embed=True`, alternately, `--repeats` times; then the one prompt-only forward that embeds examples no pass
covered (prompt_embeddings). Prints the seconds (min over repeats), the seconds spent inside the capture itself
(the hook's masked mean and the copy to the CPU: "capture_seconds", which the pass-level difference, noisy on
a shared machine, can only bound) and the largest difference between the embeddings the passes captured and
the prompt-only forward's; `--out` writes them as JSON.

    python bench/embedding_capture.py --n 32 --threads 2 --repeats 3 --out /tmp/embedding_capture.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch

from star.config import ActiveLearningConfig, LoraSettings, ModelConfig, TaskConfig, TrainConfig
from star.engine import embeddings
from star.engine.adapter import adapter_disabled
from star.engine.batching import encode_prompts
from star.engine.modeling import load_model
from star.engine.precision import autocast
from star.engine.scoring import greedy_uncertainty, prompt_embeddings, score_pairs
from star.tasks import build_task


def best(fn: Callable[[], object], seconds: list[float]) -> object:
    start = time.perf_counter()
    out = fn()
    seconds.append(time.perf_counter() - start)
    return out


def time_capture() -> list[float]:
    """Seconds spent in the capture's hook and row copy (accumulated into the returned one-item list)."""
    spent = [0.0]

    def timed(method: Callable) -> Callable:
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            out = method(*args, **kwargs)
            spent[0] += time.perf_counter() - start
            return out
        return wrapper

    embeddings.PromptMeans.hook = timed(embeddings.PromptMeans.hook)
    embeddings.PromptMeans.rows = timed(embeddings.PromptMeans.rows)
    return spent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=32, help="candidates scored (al.score_subsample's default: 32)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    al, train = ActiveLearningConfig(), TrainConfig()
    loaded = load_model(ModelConfig(device=args.device), LoraSettings(), show_progress=False)
    model, tok = loaded.model, loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    task = build_task(TaskConfig())
    pool = task.load("pool")[: args.n]
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in pool], train.max_prompt_tokens,
                             system=task.system_prompt)
    kw = {"show_progress": False}
    seconds: dict[str, list[float]] = {k: [] for k in ("generation", "generation_embed", "pairs", "pairs_embed",
                                                        "prompt_only", "generation_capture", "pairs_capture")}
    spent = time_capture()
    with adapter_disabled(model), autocast(args.precision, loaded.device):
        gen = lambda embed: greedy_uncertainty(model, tok, prompts, pad, al.max_new_tokens, al.batch_size,
                                               task.answer_complete, embed=embed, **kw)
        answers = [[tok.eos_token_id]] * len(prompts)  # the teacher-forced pass's responses: EOS (a short answer)
        pairs = lambda embed: score_pairs(model, prompts, answers, pad, al.batch_size, embed=embed, **kw)
        captured = {}
        for r in range(args.repeats):
            order = [False, True] if r % 2 == 0 else [True, False]  # alternate, so drift hits both alike
            for name, fn in (("generation", gen), ("pairs", pairs)):
                for embed in order:
                    spent[0] = 0.0
                    u = best(lambda: fn(embed), seconds[f"{name}_embed" if embed else name])  # noqa: B023
                    captured[name] = u.embeddings if embed else captured.get(name)
                    if embed:
                        seconds[f"{name}_capture"].append(spent[0])
            only = best(lambda: prompt_embeddings(model, prompts, pad, al.batch_size, **kw), seconds["prompt_only"])
    low = {k: min(v) for k, v in seconds.items()}
    result = {
        "n": args.n, "threads": torch.get_num_threads(), "precision": args.precision, "device": str(loaded.device),
        "model": ModelConfig().name, "max_new_tokens": al.max_new_tokens, "batch_size": al.batch_size,
        "seconds_min": low, "seconds_all": seconds,
        "overhead": {"generation": low["generation_embed"] / low["generation"] - 1,
                     "pairs": low["pairs_embed"] / low["pairs"] - 1},
        "max_abs_diff_vs_prompt_only": {k: float(np.abs(v - only).max()) for k, v in captured.items()},
        "embedding_scale": float(np.abs(only).max()),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
