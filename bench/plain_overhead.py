"""What issue #14's code costs a plain run: the share of a `pe-dynamic` run's time spent in the functions the
diversity, disagreement, stopping and cost features added to the loop's path.

A wall-clock before/after of a whole run cannot resolve 5% on a shared CPU (runs vary by more than that), so
this profiles one run (cProfile) and sums the cumulative time of those functions. The total is the run's
profiled time, inflated by the profiler as much as the features' share is. On the tiny model (default) the
run is short, so the share is an upper bound for a real model's run.

    python bench/plain_overhead.py                     # tiny model, 4 rounds
    python bench/plain_overhead.py --model embedded    # SmolLM2-135M-Instruct, micro settings
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pool_scaling  # bench/ is not a package: found through sys.path

#: The functions issue #14 put on a plain run's path (a plain run enters them and returns at once).
FEATURE_FUNCTIONS = {
    ("loop/cost.py", "estimate_costs"), ("loop/cost.py", "within_budget"), ("loop/cost.py", "cost_metrics"),
    ("loop/embeddings.py", "round_embeddings"), ("loop/embeddings.py", "keep_captured"),
    ("loop/stopping.py", "stop_answers"), ("loop/stopping.py", "stop_record"), ("loop/stopping.py", "stopped_early"),
    ("al/uncertainty.py", "value"), ("config/run.py", "_check_disagreement"),
}


def profile_run(config: dict, out: Path) -> pstats.Stats:
    """Run `config` under cProfile; the stats."""
    from star.loop import run

    profiler = cProfile.Profile()
    profiler.runcall(run, config, show_progress=False)
    profiler.dump_stats(out)
    return pstats.Stats(str(out))


def feature_share(stats: pstats.Stats) -> dict:
    """Calls and cumulative seconds of each feature function, their sum, and its share of the run."""
    rows = {}
    for (filename, _line, name), (_cc, calls, _tt, cumtime, _callers) in stats.stats.items():
        key = (f"{Path(filename).parent.name}/{Path(filename).name}", name)
        if key in FEATURE_FUNCTIONS:
            rows[f"{key[0]}:{name}"] = {"calls": calls, "seconds": cumtime}
    total = stats.total_tt
    spent = sum(r["seconds"] for r in rows.values())
    return {"functions": rows, "feature_seconds": spent, "run_seconds": total, "share": spent / total}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "embedded"], default="tiny")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--out", default="docs/results/bench/plain_overhead.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = pool_scaling.tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else "embedded:smollm2-135m-instruct"
        config = pool_scaling.cell_config(model, 400, True, Path(tmp) / "run", threads=1)
        config["al"]["rounds"] = args.rounds
        result = {"model": args.model, "rounds": args.rounds, **feature_share(profile_run(config, Path(tmp) / "prof"))}
    print("| function | calls | ms |\n|---|---:|---:|")
    for name, row in sorted(result["functions"].items()):
        print(f"| {name} | {row['calls']} | {1000 * row['seconds']:.3f} |")
    print(f"\nissue #14's code on a plain pe-dynamic run: {1000 * result['feature_seconds']:.2f} ms of "
          f"{result['run_seconds']:.2f} s = {100 * result['share']:.4f}% (limit: 5%)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
