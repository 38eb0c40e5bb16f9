"""Pool scaling: a round's seconds and peak memory against the pool's size (issue #16, part 5).

Each cell is a fresh process running `star.loop.run` for two rounds (round 0: the random
initial draw, plus the base model's scores of the whole pool when al.score_subsample is off;
round 1: an active-learning round) on the built-in arithmetic task with N pool examples, with
`al.score_subsample` on (64 candidates a round) and off (every unlabelled example). It reports
each round's phase seconds from metrics.json, the rest of the process's wall time (imports,
loading the model, building and tokenising the pool, writing files), the process's CPU seconds
(user + system: with one thread, the work done, and much less sensitive than wall time to other
jobs on the machine) and its peak RSS, then the growth of each per 10x of pool.

The model is `tiny` (a 2-layer, 32-wide random Llama with a byte-level tokenizer, the unit
tests' model: the curve measures the pipeline's cost, not the network's) or `embedded`
(SmolLM2-135M-Instruct: realistic, but only subsample-on cells are affordable on a CPU).

    python bench/pool_scaling.py                       # tiny, 1k/10k/100k, on and off
    python bench/pool_scaling.py --model embedded --subsample on --sizes 1000,10000,100000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("score", "label", "train", "eval", "total")


def tiny_model(folder: Path) -> str:
    """The unit tests' tiny random model, saved in `folder` (built by tests/conftest.py's own function)."""
    spec = importlib.util.spec_from_file_location("star_tests_conftest", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.make_tiny_model(folder))


def cell_config(model: str, pool: int, subsample: bool, out: Path, threads: int) -> dict:
    """Two rounds of pe-dynamic on the arithmetic task with `pool` examples."""
    tiny = model != "embedded:smollm2-135m-instruct"
    return {
        "seed": 0, "output_dir": str(out),
        "model": {"name": model, "threads": threads},
        "task": {"name": "arithmetic", "pool_size": pool, "test_size": 32, "max_steps": 2},
        "al": {"initial": 16, "query": 16, "rounds": 2, "strategy": "pe-dynamic", "mc_passes": 3,
               "score_subsample": 64 if subsample else None, "batch_size": 32,
               "max_new_tokens": 8 if tiny else 32},
        "lora": {"r": 2 if tiny else 8, "alpha": 4 if tiny else 16},
        "train": {"epochs": 1, "batch_size": 8},
        "eval": {"max_new_tokens": 8 if tiny else 32, "batch_size": 32},
    }


def run_cell(config: dict) -> dict:
    """In this process: run the cell and return its phase seconds, wall seconds and peak RSS."""
    start = time.perf_counter()
    from star.loop import run

    metrics = run(config, show_progress=False)
    wall = time.perf_counter() - start
    rounds = {f"round{m['round']}": {p: round(m["seconds"][p], 3) for p in PHASES} for m in metrics}
    other = wall - sum(r["total"] for r in rounds.values())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "other_s": round(other, 2),
            **rounds, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def spawn(config: dict) -> dict:
    """Run one cell in a fresh process (so that its peak RSS is its own)."""
    out = subprocess.run([sys.executable, __file__, "--cell", json.dumps(config)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")}, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"cell failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def growth(rows: list[dict], key: str) -> dict[str, float | None]:
    """Per subsample setting: the factor `key` grows by per 10x of pool (geometric mean over the steps)."""
    result: dict[str, float | None] = {}
    for setting in ("on", "off"):
        pts = sorted((r["pool"], _get(r, key)) for r in rows if r["subsample"] == setting and _get(r, key))
        if len(pts) < 2:
            continue
        decades = math.log10(pts[-1][0] / pts[0][0])
        result[setting] = round((pts[-1][1] / pts[0][1]) ** (1 / decades), 2) if decades > 0 else None
    return result


def _get(row: dict, key: str) -> float | None:
    value: object = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) else None


def table(rows: list[dict]) -> str:
    """Markdown: one line a cell."""
    head = "| pool | subsample | CPU s | round 1 score s | round 1 total s | round 0 total s | other s | peak RSS MB |"
    lines = [head, "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['pool']:,} | {r['subsample']} | {r['cpu_s']:.0f} | {r['round1']['score']:.1f} | {r['round1']['total']:.1f} | "
                     f"{r['round0']['total']:.1f} | {r['other_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    p.add_argument("--sizes", default="1000,10000,100000", help="pool sizes, comma-separated")
    p.add_argument("--subsample", choices=["on", "off", "both"], default="both")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads of each cell")
    p.add_argument("--out", default="docs/results/bench/pool_scaling.json")
    p.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell from its JSON config
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return
    settings = ["on", "off"] if args.subsample == "both" else [args.subsample]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else "embedded:smollm2-135m-instruct"
        for size in (int(s) for s in args.sizes.split(",")):
            for setting in settings:
                config = cell_config(model, size, setting == "on", Path(tmp) / f"run-{size}-{setting}", args.threads)
                rows.append({"pool": size, "subsample": setting, **spawn(config)})
                print(f"pool {size:,}, subsample {setting}: {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    result = {"model": args.model, "threads": args.threads, "cells": rows,
              "growth_per_10x": {k: growth(rows, k) for k in ("cpu_s", "round1.total", "round1.score", "round0.total",
                                                               "other_s", "peak_rss_mb")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(rows))
    print("growth per 10x of pool:", json.dumps(result["growth_per_10x"]))


if __name__ == "__main__":
    main()
