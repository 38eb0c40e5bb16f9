"""Does a generation and MC-scoring pass before training slow the training that follows? (issue #16)

Trains 48 built-in arithmetic pairs (one epoch, bf16 where fast, 2 threads) three times; with `gen`,
each training follows greedy generation of 32 pool prompts and their K = 3 MC scoring, as a round's
training follows its scoring. Trimming (parallel/memory.py): by default as the code does it (a
`TrimGuard`: only past its slack); with `notrim`, never; with `perbatch`, after every batch (the code
before the guard). Prints the three training times and how many trims ran. Run the variants
alternately, in separate processes, nothing else running:

    for v in "gen" "gen notrim" "gen perbatch" "gen" "gen notrim" "gen perbatch"; do
        python bench/train_after_scoring.py $v; done
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import round_speed as rs

from star.engine import training
from star.engine.generation import generate
from star.engine.scoring import score_pairs


def main() -> None:
    variant = sys.argv[1:]
    from star.parallel import memory

    trims = []
    trim = (lambda: None) if "notrim" in variant else memory.release_free_memory
    memory.release_free_memory = lambda: trims.append(1) or trim()
    if "perbatch" in variant:
        memory.resident_bytes = lambda: None  # no reading: the guard trims after every batch
    args = rs.parse_args(["--task", "arithmetic", "--n-score", "32", "--n-train", "48", "--n-eval", "1",
                          "--epochs", "1", "--threads", "2"])
    b = rs.setup(args)
    prompts, responses = b.train.prompts, b.train.responses
    torch.manual_seed(0)
    training.train_adapter(b.model, prompts[:8], responses[:8], b.pad_id, b.train_cfg, 0, show_progress=False)
    seconds = []
    for _ in range(3):
        if "gen" in variant:
            with torch.inference_mode():
                gens = generate(b.model, b.tokenizer, b.score.prompts, 64, 32, b.task.answer_complete,
                                show_progress=False)
                score_pairs(b.model, b.score.prompts, [g.token_ids or [1] for g in gens], b.pad_id, 32, passes=3,
                            seed=0, show_progress=False)
        start = time.perf_counter()
        training.train_adapter(b.model, prompts, responses, b.pad_id, b.train_cfg, 0, show_progress=False)
        seconds.append(round(time.perf_counter() - start, 2))
    print(" ".join(variant) or "none", seconds, f"trims {len(trims)}", flush=True)


if __name__ == "__main__":
    main()
