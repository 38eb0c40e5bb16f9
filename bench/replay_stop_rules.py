"""Replay stopping rules on finished runs that did not record them, from their saved adapters.

A stopping rule never changes what a run selects (the stop set is only answered, never taken out of the
candidates), so a run made without al.stop is the same run as one made with the rules recorded and not
enforced. This script loads each round's adapter of each run, answers the stop set that such a run would
have drawn (same seed, same pool), and evaluates the rules as the loop does (`star.loop.stopping.rule_record`,
in the run's own al.precision). It writes nothing into the runs. Output: a JSON with every round's "stop"
record and the report's per-rule summary, and the report's "Stopping rules" table as markdown.

    python bench/replay_stop_rules.py runs/arithmetic-evidence/random/seed-* runs/arithmetic-evidence/pe-dynamic/seed-* \
        --stop-config docs/experiments/arithmetic-diversity.yaml --out docs/results/arithmetic-diversity/replayed-stops
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

from star.config import StopConfig, load_stored_config, read_yaml
from star.engine.adapter import load_adapter_weights
from star.engine.batching import encode_prompts
from star.engine.modeling import load_model
from star.experiments.records import load_record
from star.experiments.render import render_markdown
from star.experiments.stopping import stop_entries, stopping_blocks
from star.loop.stopping import (
    answer_stop_set,
    first_answered,
    rule_record,
    stop_set_indices,
    unlabelled_positions,
)
from star.tasks import build_task


def labelled_by_round(run: Path, rounds: int) -> list[set[str]]:
    """Example ids labelled by the end of each round 0..rounds-1, read without writing (read-only SQLite)."""
    con = sqlite3.connect(f"file:{run / 'labels.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT example_id, round FROM labels").fetchall()
    finally:
        con.close()
    return [{i for i, r in rows if r <= t} for t in range(rounds)]


def replay(run: Path, stop: StopConfig, threads: int) -> list[dict]:
    """Every finished round's "stop" record of `run`, as the loop would have written it with `stop`."""
    cfg = load_stored_config(run / "config.yaml")
    cfg.model.threads = threads
    cfg.al.stop = stop
    record = load_record(run)
    metrics = record.metrics
    task = build_task(cfg.task)
    pool = task.load("pool")
    idx = stop_set_indices(len(pool), stop.set_size, cfg.seed)
    examples = [pool[i] for i in idx]
    loaded = load_model(cfg.model, cfg.lora, show_progress=False)
    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = encode_prompts(tok, [task.prompt(e.question) for e in examples], cfg.train.max_prompt_tokens,
                             system=task.system_prompt)
    answers = []
    for t in range(len(metrics)):
        load_adapter_weights(loaded.model, run / f"round-{t}" / "adapter")
        answers.append(answer_stop_set(cfg, loaded, task, examples, prompts, pad_id))
    ids = [e.id for e in examples]
    labelled = labelled_by_round(run, len(metrics))
    return [rule_record(cfg, t, metrics[t], answers[first_answered(cfg, t):t + 1],
                        unlabelled_positions(ids, labelled[t])) for t in range(len(metrics))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="finished run folders (cells of a grid)")
    p.add_argument("--stop-config", type=Path, required=True, help="a YAML whose al.stop names the rules")
    p.add_argument("--out", type=Path, required=True, help="folder for replayed-stops.json and .md")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    stop = StopConfig(**{**read_yaml(args.stop_config)["al"]["stop"], "enforce": False})
    args.out.mkdir(parents=True, exist_ok=True)
    records, per_run = [], []
    for run in args.runs:
        start = time.perf_counter()
        stops = replay(run, stop, args.threads)
        record = load_record(run)
        for m, s in zip(record.metrics, stops):
            m["stop"] = s  # in memory only: the report's summary reads it from there
        record.config.al.stop = stop
        records.append(record)
        per_run.append({"path": str(run), "rounds": stops, "seconds": round(time.perf_counter() - start, 1)})
        print(f"{run}: {[s['rules'] for s in stops]}", flush=True)
    summary = stop_entries(records)
    (args.out / "replayed-stops.json").write_text(json.dumps({"stop": stop.model_dump(), "runs": per_run,
                                                               "stopping": summary}, indent=1), encoding="utf-8")
    (args.out / "replayed-stops.md").write_text(render_markdown(stopping_blocks({"stopping": summary})), encoding="utf-8")


if __name__ == "__main__":
    main()
