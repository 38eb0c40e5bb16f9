"""Host memory of loading a model for FSDP: every process reads the checkpoint, or only the main one.

Starts N gloo processes on this machine (CPU), loads the model with LoRA the way `star run`
does under an FSDP launch, shards it, and reports each process's peak resident memory (VmHWM)
and its memory once sharded (VmRSS), plus the wall time of loading and sharding. The two
modes are accelerate's `fsdp_cpu_ram_efficient_loading: false` ("every") and `true` ("main").

    python bench/fsdp_load_memory.py                      # the embedded default model, 2 processes
    python bench/fsdp_load_memory.py --model /path/to/model --processes 2 --out bench/results/fsdp_load_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import speedlib
import torch
import torch.multiprocessing as mp

from star.config import LoraSettings, ModelConfig
from star.engine.modeling import load_model
from star.parallel.distributed import exit_process, free_port
from star.parallel.fsdp import FsdpSettings, shard_from_main, shard_model


def _status_mb(key: str) -> float:
    kb = speedlib._proc_kb(key)
    return float("nan") if kb is None else kb / 1024


def _pss_mb() -> float:
    """Proportional set size: shared pages (a checkpoint mapped by several processes) counted once overall."""
    with open("/proc/self/smaps_rollup", encoding="ascii") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _worker(rank: int, world: int, model: str, dtype: str, mode: str, port: int, out: str) -> None:
    import torch.distributed as tdist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    start_rss, start = _status_mb("VmRSS"), time.perf_counter()
    from_main = mode == "main"
    loaded = load_model(ModelConfig(name=model, threads=1, dtype=dtype), LoraSettings(), place=False,
                        weights=rank == 0 or not from_main)
    settings = FsdpSettings(main_loads=from_main)
    if from_main:
        shard_from_main(loaded.model, settings, torch.device("cpu"), is_main=rank == 0)
    else:
        shard_model(loaded.model, settings, torch.device("cpu"))
    tdist.barrier()
    seconds = time.perf_counter() - start
    import gc

    gc.collect()
    row = {"mode": mode, "rank": rank, "seconds": round(seconds, 2), "start_rss_mb": round(start_rss),
           "peak_rss_mb": round(_status_mb("VmHWM")), "sharded_rss_mb": round(_status_mb("VmRSS")), "sharded_pss_mb": round(_pss_mb())}
    Path(out, f"{mode}-{rank}.json").write_text(json.dumps(row))
    exit_process(0)  # leaves the group and skips interpreter teardown, where gloo can abort (docs/scaling.md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=ModelConfig().name, help="model.name (default: the embedded SmolLM2-135M)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--dtype", default="auto", help="model.dtype: auto (fp32 on CPU), float32, bfloat16; "
                        "a dtype other than the checkpoint's makes every loading process convert a private copy")
    parser.add_argument("--out", default="bench/results/fsdp_load_memory.json")
    args = parser.parse_args(argv)
    from star.engine.modeling import resolve_model_path

    model = resolve_model_path(args.model)  # convert the embedded GGUF once, before the processes start
    rows = []
    scratch = Path(args.out).with_suffix(".parts")
    scratch.mkdir(parents=True, exist_ok=True)
    for mode in ("every", "main"):
        mp.spawn(_worker, args=(args.processes, model, args.dtype, mode, free_port(), str(scratch)), nprocs=args.processes, join=True)
        rows += [json.loads((scratch / f"{mode}-{r}.json").read_text()) for r in range(args.processes)]
    print("| checkpoint read by | process | load + shard s | RSS before MB | peak RSS MB | peak above start MB | RSS once sharded MB | PSS once sharded MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        r["peak_above_start_mb"] = r["peak_rss_mb"] - r["start_rss_mb"]
        print(f"| {'every process' if r['mode'] == 'every' else 'main only'} | {r['rank']} | {r['seconds']} | "
              f"{r['start_rss_mb']:,} | {r['peak_rss_mb']:,} | {r['peak_above_start_mb']:,} | {r['sharded_rss_mb']:,} | {r['sharded_pss_mb']:,} |")
    total = {m: sum(r["peak_above_start_mb"] for r in rows if r["mode"] == m) for m in ("every", "main")}
    print(f"sum over processes of the peak above start: every process {total['every']:,} MB, main only {total['main']:,} MB")
    meta = {"model": args.model, "dtype": args.dtype, "processes": args.processes, **speedlib.machine_info(torch.device("cpu"))}
    Path(args.out).write_text(json.dumps({"machine": meta, "rows": rows, "sum_of_peaks_above_start_mb": total}, indent=1))
    for f in scratch.iterdir():
        f.unlink()
    scratch.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
