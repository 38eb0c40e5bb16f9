"""Fast rounds: scoring, training and evaluation of `star` against the release's pipeline and the hardware.

In one process, on the same model, data and settings, it times the three phases of a round
(a) the release's way (bench/release_baseline.py), (b) the project's own path
(star.engine.scoring.score_pairs, star.engine.training.train_adapter, star.engine.evaluation.evaluate), and
(c) measures the hardware ceiling (fp32 / bf16 matmul GFLOP/s). It checks that our PE/ME
equal the baseline's (gold responses, MC dropout off) and that the same top-k is selected,
prints a table and writes it as JSON. `--ablations` measures the optimisations one at a time.

    python bench/round_speed.py --task gsm8k --data ../shared/datasets/GSM8K
    python bench/round_speed.py --task arithmetic --n-score 8 --n-train 8 --n-eval 4
    python bench/round_speed.py --skip-main --ablations scoring,training,eval
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import release_baseline as release
import speedlib
import torch

from star.al.strategies import ScoreInputs, get_strategy
from star.config import (
    ActiveLearningConfig,
    EvalConfig,
    LoraSettings,
    ModelConfig,
    TaskConfig,
    TrainConfig,
)
from star.engine.adapter import reset_adapter
from star.engine.batching import encode_prompts, encode_responses
from star.engine.evaluation import evaluate
from star.engine.modeling import load_model
from star.engine.precision import autocast_dtype, autocast_to
from star.engine.scoring import score_pairs
from star.engine.training import train_adapter
from star.tasks import build_task
from star.tasks.base import Example, Task

TOLERANCE = 1e-4  # |ours - baseline| <= TOLERANCE * max(1, |baseline|), per example, PE and ME


@dataclass
class Split:
    """Token ids of one subset: prompts, gold responses, and the examples themselves."""

    examples: list[Example]
    prompts: list[list[int]]
    responses: list[list[int]]

    @property
    def lengths(self) -> list[int]:
        return [len(p) + len(r) for p, r in zip(self.prompts, self.responses)]

    @property
    def response_tokens(self) -> int:
        return sum(len(r) for r in self.responses)


@dataclass
class Bench:
    """Everything the phases share: model, data, settings and the FLOP accounting."""

    args: argparse.Namespace
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    task: Task
    score: Split
    train: Split
    test: Split
    flops: speedlib.ModelFlops
    al: ActiveLearningConfig
    train_cfg: TrainConfig
    eval_cfg: EvalConfig

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["gsm8k", "arithmetic"], default="gsm8k")
    p.add_argument("--data", default="../shared/datasets/GSM8K", help="folder with train.jsonl/test.jsonl (gsm8k)")
    p.add_argument("--n-score", type=int, default=16, help="pool examples scored")
    p.add_argument("--n-train", type=int, default=16, help="labelled examples trained on")
    p.add_argument("--n-eval", type=int, default=16, help="test examples evaluated")
    p.add_argument("--mc-passes", type=int, default=3, help="K MC-dropout passes while scoring (1: MC off)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: TrainConfig's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="auto: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--train-precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="ours' train.precision (auto: bf16 autocast where the device has fast bf16)")
    p.add_argument("--score-precision", choices=["auto", "fp32", "bf16"], default="fp32",
                   help="ours' al.precision for scoring (default fp32, as al.precision)")
    p.add_argument("--baseline-precision", choices=["same", "fp32", "bf16"], default="same",
                   help="the baseline's training and scoring precision (same: as ours, so only pipeline choices"
                        " differ; the release ran in bf16)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="time each measurement this many times; report the fastest")
    p.add_argument("--out", default="bench/results/round_speed.json")
    p.add_argument("--ablations", default="", help="comma list of scoring,training,eval (or 'all'): one optimisation at a time")
    p.add_argument("--ablation-n", type=int, default=8, help="examples per ablation measurement")
    p.add_argument("--skip-main", action="store_true", help="only the ceiling and the ablations")
    return p.parse_args(argv)


def load_splits(args: argparse.Namespace, tokenizer) -> tuple[Task, Split, Split, Split]:
    """Score / train / test subsets, tokenised with the project's encoders."""
    pool_n = args.n_score + args.n_train
    task = build_task(TaskConfig(name=args.task, path=args.data if args.task == "gsm8k" else None,
                                 pool_size=max(pool_n, args.ablation_n), test_size=args.n_eval, seed=args.seed))
    pool, test = task.load("pool"), task.load("test")[: args.n_eval]
    limits = TrainConfig()

    def split(examples: list[Example]) -> Split:
        prompts = encode_prompts(tokenizer, [task.prompt(e.question) for e in examples], limits.max_prompt_tokens)
        responses = encode_responses(tokenizer, [task.target_for(e, e.answer) for e in examples], limits.max_answer_tokens)
        return Split(examples, prompts, responses)

    return task, split(pool[: args.n_score]), split(pool[args.n_score : pool_n]), split(test)


def setup(args: argparse.Namespace) -> Bench | None:
    if args.task == "gsm8k" and not (Path(args.data) / "train.jsonl").is_file():
        print(f"skipped: no GSM8K data at {args.data} (pass --data DIR with train.jsonl/test.jsonl, or --task arithmetic)")
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(ModelConfig(device=args.device, dtype=args.dtype), LoraSettings())
    splits = load_splits(args, loaded.tokenizer)
    train_cfg = TrainConfig(precision=args.train_precision, **({} if args.epochs is None else {"epochs": args.epochs}))
    return Bench(args, loaded.model, loaded.tokenizer, loaded.device, *splits, speedlib.ModelFlops.of(loaded.model),
                 ActiveLearningConfig(mc_passes=args.mc_passes), train_cfg, EvalConfig())


# --- phases ----------------------------------------------------------------------------------

def warm_up(b: Bench) -> None:
    """One tiny run of every path, so one-off initialisation is not timed."""
    p, r = b.score.prompts[:1], [x[:4] for x in b.score.responses[:1]]
    release.score_pool(b.model, p, r)
    score_pairs(b.model, p, r, b.pad_id, 4, show_progress=False)
    release.generate_fixed(b.model, b.tokenizer, p, 1, new_tokens=2)


def phase_train(b: Bench) -> dict:
    """Both trainings from the same fresh adapter; ours stays live for the inference phases."""
    s, seed, reps = b.train, b.args.seed, b.args.repeats
    fresh = lambda: reset_adapter(b.model, seed)
    ours_amp = autocast_dtype(b.train_cfg.precision, b.device)
    base_setting = b.args.baseline_precision
    base_amp = ours_amp if base_setting == "same" else autocast_dtype(base_setting, b.device)
    base, info = speedlib.timed(b.device, lambda: release.train_padded(b.model, s.prompts, s.responses, b.pad_id,
                                                                        b.train_cfg, seed, autocast=base_amp), reps, fresh)
    base.info.update(info, precision=_precision(base_amp))
    ours, stats = speedlib.timed(b.device, lambda: train_adapter(b.model, s.prompts, s.responses, b.pad_id, b.train_cfg,
                                                                  seed, show_progress=False), reps, fresh)
    ours.info.update(steps=stats.steps, mean_loss=stats.mean_loss, final_loss=stats.final_loss, precision=stats.precision)
    useful = 2 * b.train_cfg.epochs * b.flops.forward(s.lengths, s.response_tokens)
    return {"baseline": base, "ours": ours, "useful_flops": useful, "tokens": b.train_cfg.epochs * sum(s.lengths),
            "ceiling_dtype": "bfloat16" if ours_amp is not None else None}


def _precision(amp: torch.dtype | None) -> str:
    return "bf16" if amp is not None else "fp32"


def phase_score(b: Bench) -> tuple[dict, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """K passes over the pool subset (MC dropout on when K > 1), the release's way and ours."""
    s, k, seed, reps = b.score, b.al.mc_passes, b.args.seed, b.args.repeats
    ours_amp = autocast_dtype(b.args.score_precision, b.device)
    base_setting = b.args.baseline_precision
    base_amp = ours_amp if base_setting == "same" else autocast_dtype(base_setting, b.device)

    def baseline() -> tuple[np.ndarray, np.ndarray]:
        with autocast_to(base_amp, b.device):
            return release.score_pool(b.model, s.prompts, s.responses, passes=k, mc=k > 1, seed=seed)

    def ours_scoring():
        with autocast_to(ours_amp, b.device):
            return score_pairs(b.model, s.prompts, s.responses, b.pad_id, b.al.batch_size, passes=k,
                               seed=seed, show_progress=False)

    base, base_scores = speedlib.timed(b.device, baseline, reps)
    ours, u = speedlib.timed(b.device, ours_scoring, reps)
    base.info.update(precision=_precision(base_amp))
    ours.info.update(precision=_precision(ours_amp))
    useful = k * b.flops.forward(s.lengths, s.response_tokens)
    row = {"baseline": base, "ours": ours, "useful_flops": useful, "tokens": k * sum(s.lengths), "passes": k,
           "ceiling_dtype": "bfloat16" if ours_amp is not None else None, "fp32": ours_amp is None and base_amp is None}
    return row, base_scores, (u.pe, u.me)


def phase_eval(b: Bench) -> dict:
    """Greedy evaluation: always 256 new tokens (release) vs ours (KV cache, stops at the answer)."""
    s, reps = b.test, b.args.repeats
    answers = [e.answer for e in s.examples]
    base, info = speedlib.timed(b.device, lambda: release.evaluate_fixed(b.model, b.tokenizer, b.task, answers, s.prompts,
                                                                          b.eval_cfg.batch_size), reps)
    base.info.update(info)
    ours, result = speedlib.timed(b.device, lambda: evaluate(b.model, b.tokenizer, b.task, s.examples, s.prompts,
                                                              b.eval_cfg, show_progress=False), reps)
    # Our generated lengths, re-tokenised from the decoded outputs (+1 for an EOS, within the cap).
    cap = b.eval_cfg.max_new_tokens
    new = [min(cap, len(b.tokenizer(p["output"], add_special_tokens=False)["input_ids"]) + 1) for p in result.predictions]
    ours.info.update(accuracy=result.accuracy, ece=result.ece, new_tokens=sum(new))
    useful = b.flops.generation([len(p) for p in s.prompts], new)
    return {"baseline": base, "ours": ours, "useful_flops": useful, "tokens": sum(new)}


def check_equal(b: Bench, baseline: tuple[np.ndarray, np.ndarray] | None = None,
                ours: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """PE/ME of ours vs the baseline (gold responses, MC off, fp32), and the top-k each selects.

    The timed K-pass scores are reused when K = 1 in fp32; otherwise both score once more with
    MC dropout off (on an fp32 copy of the model when the timed runs used bf16).
    """
    s = b.score
    if baseline is None or ours is None or next(b.model.parameters()).dtype != torch.float32:
        model = b.model if next(b.model.parameters()).dtype == torch.float32 else copy.deepcopy(b.model).float()
        baseline = release.score_pool(model, s.prompts, s.responses)
        u = score_pairs(model, s.prompts, s.responses, b.pad_id, b.al.batch_size, show_progress=False)
        ours = (u.pe, u.me)
        del model
    out, ok = {"tolerance": f"|ours - baseline| <= {TOLERANCE} * max(1, |baseline|)"}, True
    k = max(1, len(s.prompts) // 4)
    for j, (measure, strategy) in enumerate((("pe", "pe"), ("me", "entropy"))):
        a, ref = ours[j].mean(axis=1), baseline[j].mean(axis=1)
        diff = np.abs(a - ref)
        rel = float((diff / np.maximum(1.0, np.abs(ref))).max())
        picks = [get_strategy(strategy).select(ScoreInputs(None, x, 0.0, np.random.default_rng(0), len(x)), k)[1]
                 for x in (a, ref)]
        same = [int(i) for i in picks[0]] == [int(i) for i in picks[1]]
        out[measure] = {"max_abs_diff": float(diff.max()), "max_rel_diff": rel, f"same_top_{k}": same,
                        "selected_ids": [s.examples[int(i)].id for i in picks[0]]}
        ok = ok and rel <= TOLERANCE and same
    out["passed"] = ok
    return out


# --- report ----------------------------------------------------------------------------------

def model_ceiling(b: Bench, ceil: dict) -> float:
    """GFLOP/s ceiling in the model's dtype: the best measured product."""
    dtype = str(next(b.model.parameters()).dtype).removeprefix("torch.")
    return ceil.get(dtype, ceil["float32"])["best"]


def summarise(name: str, row: dict, ceiling_gflops: float) -> dict:
    """One table row: seconds, speed-up, useful GFLOP/s, % of ceiling, tokens/s vs its ceiling, memory."""
    base, ours = row["baseline"], row["ours"]
    gflops = row["useful_flops"] / ours.seconds / 1e9
    flops_per_token = row["useful_flops"] / max(1, row["tokens"])
    return {
        "phase": name, "baseline_s": base.seconds, "ours_s": ours.seconds, "speedup": base.seconds / ours.seconds,
        "ours_gflops": gflops, "pct_of_ceiling": 100.0 * gflops / ceiling_gflops,
        "ours_tokens_per_s": row["tokens"] / ours.seconds, "baseline_tokens_per_s": row["tokens"] / base.seconds,
        "ceiling_tokens_per_s": ceiling_gflops * 1e9 / flops_per_token, "useful_gflop": row["useful_flops"] / 1e9,
        "baseline_extra_mb": base.extra_mb, "ours_extra_mb": ours.extra_mb,
        "baseline_peak_mb": base.peak_mb, "ours_peak_mb": ours.peak_mb, "memory_kind": ours.memory_kind,
        "baseline_info": base.info, "ours_info": ours.info,
    }


def round_row(rows: list[dict], ceiling_gflops: float) -> dict:
    """The whole round: sums of seconds and useful FLOPs, the largest per-phase peak."""
    base = sum(r["baseline_s"] for r in rows)
    ours = sum(r["ours_s"] for r in rows)
    gflop = sum(r["useful_gflop"] for r in rows)

    def peak(key: str) -> float | None:
        values = [r[key] for r in rows if r[key] is not None]
        return max(values) if values else None

    return {"phase": "round", "baseline_s": base, "ours_s": ours, "speedup": base / ours, "ours_gflops": gflop / ours,
            "pct_of_ceiling": 100.0 * gflop / ours / ceiling_gflops, "useful_gflop": gflop,
            "baseline_extra_mb": peak("baseline_extra_mb"), "ours_extra_mb": peak("ours_extra_mb"),
            "baseline_peak_mb": peak("baseline_peak_mb"), "ours_peak_mb": peak("ours_peak_mb")}


def _mb(x: float | None) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def format_table(rows: list[dict]) -> str:
    """The phases as a Markdown table (printed, and pasted into docs/performance.md)."""
    lines = ["| phase | baseline s | ours s | speed-up | ours tok/s (ceiling) | ours GFLOP/s | ours % of ceiling |"
             " baseline peak MB | ours peak MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        tps = f"{r['ours_tokens_per_s']:,.0f} ({r['ceiling_tokens_per_s']:,.0f})" if "ours_tokens_per_s" in r else ""
        lines.append(f"| {r['phase']} | {r['baseline_s']:.2f} | {r['ours_s']:.2f} | {r['speedup']:.2f}x | {tps} |"
                     f" {r['ours_gflops']:.1f} | {r['pct_of_ceiling']:.0f}% | {_mb(r['baseline_extra_mb'])} |"
                     f" {_mb(r['ours_extra_mb'])} |")
    return "\n".join(lines)


def format_ceiling(ceil: dict, flops: speedlib.ModelFlops, b: Bench | None) -> str:
    lines = ["| dtype | best matmul GFLOP/s | shapes (GFLOP/s) | scoring tokens/s ceiling |", "|---|---:|---|---:|"]
    for dtype, entry in ceil.items():
        per_token = None
        if b is not None:
            per_token = b.flops.forward(b.score.lengths, b.score.response_tokens) / sum(b.score.lengths)
        tps = "n/a" if per_token is None else f"{entry['best'] * 1e9 / per_token:,.0f}"
        shapes = "; ".join(f"{k}: {v}" for k, v in entry["shapes"].items())
        lines.append(f"| {dtype} | {entry['best']:.1f} | {shapes} | {tps} |")
    lines.append(f"\nFLOPs/token: 2 x {flops.body / 1e6:.1f}M body params (+ attention) at every position,"
                 f" + 2 x {flops.head / 1e6:.1f}M LM-head params at response positions only.")
    return "\n".join(lines)


def _jsonable(x):
    if isinstance(x, speedlib.Measurement):
        return asdict(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def run_main(b: Bench, ceil: dict) -> tuple[list[dict], dict]:
    """The three phases, the round, and the equality check (training's ceiling in its autocast dtype)."""
    ceiling_gflops = model_ceiling(b, ceil)
    warm_up(b)
    train = phase_train(b)
    score, base_scores, our_scores = phase_score(b)
    same = (base_scores, our_scores) if b.al.mc_passes == 1 and score["fp32"] else (None, None)
    equal = check_equal(b, *same)
    evaluation = phase_eval(b)
    def ceiling_of(row: dict) -> float:  # the best matmul rate in the dtype the phase's matmuls ran in
        return ceil[row["ceiling_dtype"]]["best"] if row["ceiling_dtype"] in ceil else ceiling_gflops

    rows = [summarise("scoring", score, ceiling_of(score)), summarise("training", train, ceiling_of(train)),
            summarise("evaluation", evaluation, ceiling_gflops)]
    rows.append(round_row(rows, ceiling_gflops))
    return rows, equal


def trained_adapter(b: Bench, trained: bool) -> dict:
    """A copy of our trained adapter's weights (trained here first when the main phases were skipped)."""
    from peft import get_peft_model_state_dict

    if not trained:
        warm_up(b)
        reset_adapter(b.model, b.args.seed)
        train_adapter(b.model, b.train.prompts, b.train.responses, b.pad_id, b.train_cfg, b.args.seed, show_progress=False)
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(b.model).items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    b = setup(args)
    if b is None:
        return 0
    ceil = speedlib.ceiling(576, 1536, 49152, b.device) if b.device.type == "cpu" else \
        speedlib.ceiling(576, 1536, 49152, b.device, rows=8192)
    report = {"settings": vars(args), "machine": speedlib.machine_info(b.device), "ceiling_gflops": ceil,
              "flops_accounting": asdict(b.flops), "model_dtype": str(next(b.model.parameters()).dtype)}
    print(format_ceiling(ceil, b.flops, b))
    if not args.skip_main:
        rows, equal = run_main(b, ceil)
        report.update(rows=rows, equality=equal)
        print("\n" + format_table(rows))
        print("\nequality (gold responses, MC off):", json.dumps(equal))
    if args.ablations:
        import ablations

        report["ablations"] = ablations.run(b, args.ablations, trained_adapter(b, trained=not args.skip_main))
        print("\n" + ablations.format_table(report["ablations"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_jsonable(report), indent=2))
    print(f"\nwrote {out}")
    return 0 if args.skip_main or report["equality"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
