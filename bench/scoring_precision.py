"""A round's pool scoring in each precision (issue #16): fp32, bf16 autocast alone (frozen weights re-cast at
every decoding step), and `scoring_precision` (the frozen weights cast once for the phase; star's bf16 path).

Each variant greedily answers `--n-score` built-in arithmetic pool prompts with the embedded model and
scores the answers with K = 3 MC-dropout passes, alternating variants `--repeats` times in one process.
Prints each variant's seconds and whether the once-cast gave autocast's tokens and PE bit for bit; writes
JSON with `--out`. Nothing else should run meanwhile:

    python bench/scoring_precision.py --n-score 32 --repeats 3 --out docs/results/bench/scoring_precision.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import round_speed as rs

from star.engine.generation import generate
from star.engine.precision import autocast, scoring_precision
from star.engine.scoring import score_pairs
from star.store.io import write_json

VARIANTS = ("fp32", "autocast", "once-cast")


def _context(variant: str, model: torch.nn.Module):
    """The precision context of a variant."""
    cpu = torch.device("cpu")
    return {"fp32": lambda: autocast("fp32", cpu), "autocast": lambda: autocast("bf16", cpu),
            "once-cast": lambda: scoring_precision("bf16", model, cpu)}[variant]()


def _score(b: rs.Bench, variant: str) -> tuple[float, list[list[int]], np.ndarray]:
    """Seconds, answers and MC PE of one variant's generation + K = 3 scoring pass."""
    start = time.perf_counter()
    with torch.inference_mode(), _context(variant, b.model):
        gens = generate(b.model, b.tokenizer, b.score.prompts, 64, 32, b.task.answer_complete, show_progress=False)
        answers = [g.token_ids or [1] for g in gens]
        u = score_pairs(b.model, b.score.prompts, answers, b.pad_id, 32, passes=3, seed=0, show_progress=False)
    return time.perf_counter() - start, answers, np.asarray(u.pe)


def main() -> None:
    argv = sys.argv[1:]
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 3
    n_score = argv[argv.index("--n-score") + 1] if "--n-score" in argv else "32"
    args = rs.parse_args(["--task", "arithmetic", "--n-score", n_score, "--n-train", "8", "--n-eval", "1",
                          "--threads", "0"])
    b = rs.setup(args)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    results = {}
    _score(b, "fp32")  # warm-up
    for _ in range(repeats):
        for v in VARIANTS:
            s, answers, pe = _score(b, v)
            seconds[v].append(round(s, 2))
            results[v] = (answers, pe)
    same = results["once-cast"][0] == results["autocast"][0] and np.array_equal(results["once-cast"][1],
                                                                               results["autocast"][1])
    print("| variant | seconds | min |\n|---|---|---:|")
    for v in VARIANTS:
        print(f"| {v} | {', '.join(map(str, seconds[v]))} | {min(seconds[v]):.2f} |")
    print(f"once-cast answers and PE bitwise equal to autocast's: {same}")
    if out:
        write_json(Path(out), {"n_score": int(n_score), "threads": torch.get_num_threads(), "seconds": seconds,
                               "once_cast_equals_autocast": same})


if __name__ == "__main__":
    main()
