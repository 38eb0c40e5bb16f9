"""Time the same bf16 LoRA training with the code of two source trees, in alternating processes.

Each process imports star from one tree (its src/ and bench/ first on sys.path), trains once on 8
pairs to warm up, then times two trainings of `--n-train` built-in arithmetic pairs (one epoch, the
embedded model, `--threads` torch threads) and prints one JSON line. Used to tell whether a slower
`star run` comes from the training code or from what runs around it.

    git worktree add /tmp/star-7db 7db3213
    python bench/train_between_trees.py . /tmp/star-7db --repeats 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def child(root: str, n_train: int, threads: int) -> None:
    """In a fresh process: train with `root`'s code and print the seconds."""
    sys.path[:0] = [f"{root}/src", f"{root}/bench"]
    import round_speed as rs
    import torch

    try:
        from star.engine import training
    except ImportError:  # trees from before the package split (e.g. 7db3213)
        from star import training
    args = rs.parse_args(["--task", "arithmetic", "--n-score", "1", "--n-train", str(n_train), "--n-eval", "1",
                          "--epochs", "1", "--threads", str(threads)])
    b = rs.setup(args)
    torch.manual_seed(0)
    training.train_adapter(b.model, b.train.prompts[:8], b.train.responses[:8], b.pad_id, b.train_cfg, 0,
                           show_progress=False)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        training.train_adapter(b.model, b.train.prompts, b.train.responses, b.pad_id, b.train_cfg, 0,
                               show_progress=False)
        seconds.append(round(time.perf_counter() - start, 2))
    print(json.dumps({"tree": root, "seconds": seconds}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trees", nargs=2, help="two source trees (repository roots)")
    p.add_argument("--repeats", type=int, default=2, help="processes per tree, alternating")
    p.add_argument("--n-train", type=int, default=48)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.n_train, args.threads)
        return
    results: dict[str, list[float]] = {t: [] for t in args.trees}
    for _ in range(args.repeats):
        for tree in args.trees:
            root = str(Path(tree).resolve())
            out = subprocess.run([sys.executable, __file__, *args.trees, "--child", root, "--n-train",
                                  str(args.n_train), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True).stdout
            results[tree] += json.loads(out.strip().splitlines()[-1])["seconds"]
    print(json.dumps(results))


if __name__ == "__main__":
    main()
