"""One optimisation at a time: `star`'s path with exactly one choice reverted, each timed.

Each group has a reference ("ours": the project's own function) and variants built from the
same pieces (star.engine.batching, star.engine.forward) with one switch flipped, so each row's cost over
the reference is what that one optimisation buys. Used by `bench/round_speed.py --ablations`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import release_baseline as release
import speedlib
import torch
from torch import nn

from star.engine.adapter import adapter_disabled, mc_dropout, reset_adapter
from star.engine.batching import PairBatch, collate_pairs, length_batches
from star.engine.forward import response_loss, sequence_scores, token_stats
from star.engine.generation import generate
from star.engine.precision import autocast_dtype, autocast_to
from star.engine.scoring import score_pairs
from star.engine.training import linear_schedule, make_optimizer, train_adapter

try:  # row-seeded LoRA dropout (each example's mask from its own seed), when this star has it
    from star.al.seeds import row_seed
    from star.engine.seeded_dropout import row_seeds
except ImportError:  # plain nn.Dropout masks
    row_seed, row_seeds = None, None


def _seeded(seeds: Callable[[], list[int]], batch: PairBatch, enabled: bool = True) -> contextlib.AbstractContextManager:
    """star's per-row dropout seeds around a forward (a no-op where star has none, or when disabled)."""
    if row_seeds is None or not enabled:
        return contextlib.nullcontext()
    return row_seeds(seeds(), batch.attention_mask.sum(1).tolist())

# --- scoring variants ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreVariant:
    """How a batched scorer is built; the defaults are star.engine.scoring.score_pairs' choices."""

    fixed_len: int | None = None  # pad every batch to this many tokens (None: dynamic padding)
    bucket: bool = True  # length-bucketed batches (False: input order)
    head_all: bool = False  # LM head at every position, then pick the response rows
    softmax_all: bool = False  # full-vocabulary log-softmax kept over every position
    mc_batched: bool = True  # K passes as one forward of K x B rows (False: K forwards)
    inference_mode: bool = True  # torch.inference_mode (False: torch.no_grad)
    row_seeded: bool = True  # star's per-example dropout seeds (False: plain nn.Dropout masks)


def pad_batch(batch: PairBatch, width: int, pad_id: int) -> PairBatch:
    """The same batch right-padded to `width` tokens (targets and rows unchanged)."""
    extra = width - batch.input_ids.shape[1]
    if extra <= 0:
        return batch
    pad = torch.nn.functional.pad
    return PairBatch(pad(batch.input_ids, (0, extra), value=pad_id), pad(batch.attention_mask, (0, extra)),
                     pad(batch.predict_mask, (0, extra)), batch.targets, batch.rows)


def variant_scores(model: nn.Module, batch: PairBatch, v: ScoreVariant) -> tuple[torch.Tensor, torch.Tensor]:
    """PE, ME (B,) with the LM head / log-softmax where the variant says."""
    if not v.head_all:
        return sequence_scores(model, batch)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
    if v.softmax_all:
        logp_all = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V): every position
        logp = logp_all[batch.predict_mask]  # (M, V)
        tok_logp = logp.gather(1, batch.targets.unsqueeze(1)).squeeze(1)
        ent = -(logp.exp() * logp).sum(-1)
    else:
        tok_logp, ent = token_stats(logits[batch.predict_mask], batch.targets)
    pe = torch.zeros(batch.size).index_add_(0, batch.rows.cpu(), -tok_logp.cpu())
    me = torch.zeros(batch.size).index_add_(0, batch.rows.cpu(), ent.cpu())
    return pe, me


def _batches(lengths: Sequence[int], size: int, bucket: bool) -> Iterator[list[int]]:
    if bucket:
        yield from length_batches(lengths, size)
    else:
        yield from ([*range(s, min(s + size, len(lengths)))] for s in range(0, len(lengths), size))


def score_variant(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
                  batch_size: int, passes: int, v: ScoreVariant, seed: int = 0) -> np.ndarray:
    """(n, 2): mean PE and ME over `passes` (MC dropout on when passes > 1)."""
    device = next(model.parameters()).device
    out = np.zeros((len(prompts), 2))
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    copies, loops = (passes, 1) if v.mc_batched else (1, passes)
    grad = torch.inference_mode() if v.inference_mode else torch.no_grad()
    with torch.random.fork_rng(devices=[]), grad, mc_dropout(model, enabled=passes > 1):
        torch.manual_seed(seed)
        for idx in _batches(lengths, max(1, batch_size // copies), v.bucket):
            rows = [i for _ in range(copies) for i in idx]
            batch = collate_pairs([prompts[i] for i in rows], [responses[i] for i in rows], pad_id)
            batch = pad_batch(batch, v.fixed_len, pad_id) if v.fixed_len else batch
            for loop in range(loops):
                ks = [loop + c for c in range(copies) for _ in idx]  # pass index of each row
                with _seeded(lambda ks=ks, rows=rows: [row_seed(seed, i, k) for i, k in zip(rows, ks)], batch, v.row_seeded):
                    pe, me = variant_scores(model, batch.to(device), v)
                out[idx, 0] += pe.view(copies, len(idx)).mean(0).double().cpu().numpy() / loops
                out[idx, 1] += me.view(copies, len(idx)).mean(0).double().cpu().numpy() / loops
    return out


SCORE_VARIANTS: dict[str, tuple[ScoreVariant, str]] = {
    "batched, all switches as ours": (ScoreVariant(), "must match 'ours' (sanity check of the variant scorer)"),
    "- dynamic padding (every batch padded to 384)": (ScoreVariant(fixed_len=release.RELEASE_MAX_LEN), "fixed-length padding"),
    "- length bucketing (input order, dynamic padding)": (ScoreVariant(bucket=False), "batches in input order"),
    "- response-only LM head (head at every position)": (ScoreVariant(head_all=True), "full (B, T, V) logits"),
    "- no log-softmax over prompts (log-softmax at every position)": (
        ScoreVariant(head_all=True, softmax_all=True), "the issue's 'naive batching'"),
    "- MC passes batched (K forwards of B rows)": (ScoreVariant(mc_batched=False), "K separate forwards"),
    "- inference_mode (torch.no_grad)": (ScoreVariant(inference_mode=False), "no_grad instead"),
    "row-seeded dropout masks -> plain nn.Dropout": (ScoreVariant(row_seeded=False),
                                                     "what per-example dropout seeds cost (not a speed optimisation)"),
}


def _timed(b, fn: Callable[[], object],
           before: Callable[[], object] | None = None) -> tuple[speedlib.Measurement, object]:
    return speedlib.timed(b.device, fn, b.args.repeats, before)


def scoring_rows(b, n: int) -> list[dict]:
    """The scoring ablations on the first n pool examples, K passes each."""
    P, R = b.score.prompts[:n], b.score.responses[:n]
    k, size = b.al.mc_passes, b.al.batch_size
    ref, _u = _timed(b, lambda: score_pairs(b.model, P, R, b.pad_id, size, passes=k, show_progress=False))
    rows = [_row("scoring", "ours: star.engine.scoring.score_pairs", ref, ref, "reference")]
    for name, (variant, note) in SCORE_VARIANTS.items():
        m, _ = _timed(b, lambda v=variant: score_variant(b.model, P, R, b.pad_id, size, k, v))
        rows.append(_row("scoring", name, m, ref, note))
    m, _ = _timed(b, lambda: score_pairs(b.model, P, R, b.pad_id, k, passes=k, show_progress=False))
    rows.append(_row("scoring", f"ours with al.batch_size={k} (one example, its K passes, per forward)", m, ref,
                     "config change: no padding at all; on a CPU a ~300-token row already fills the GEMMs"))
    m, _ = _timed(b, lambda: release.score_pool(b.model, P, R, passes=k, mc=k > 1))
    rows.append(_row("scoring", "release: per example, loop over tokens", m, ref, "the baseline"))
    rows += _thread_rows(b, P, R, ref)
    with adapter_disabled(b.model):
        m, _ = _timed(b, lambda: score_pairs(b.model, P, R, b.pad_id, size, show_progress=False))
    rows.append(_row("scoring", "+ base scores recomputed each round (1 pass, adapter off)", m, ref,
                     "extra cost per round that caching u_base avoids", added=True))
    rows.append(_bf16_row(b, P, R, ref))
    return rows


def _thread_rows(b, P, R, ref: speedlib.Measurement) -> list[dict]:
    rows, before = [], torch.get_num_threads()
    k = b.al.mc_passes
    for threads in sorted({1, 2} - {before}):
        torch.set_num_threads(threads)
        try:
            m, _ = _timed(b, lambda: score_pairs(b.model, P, R, b.pad_id, b.al.batch_size, passes=k,
                                                 show_progress=False))
        finally:
            torch.set_num_threads(before)
        rows.append(_row("scoring", f"ours with {threads} thread(s) instead of {before}", m, ref, "torch.set_num_threads"))
    return rows


def _bf16_row(b, P, R, ref: speedlib.Measurement) -> dict:
    """Ours in bf16 (a copy of the model): time, and how far its scores move from fp32."""
    if next(b.model.parameters()).dtype != torch.float32:
        return _row("scoring", "bf16 (skipped: the model is not fp32)", ref, ref, "")
    low = copy.deepcopy(b.model).to(torch.bfloat16)
    fp32 = score_pairs(b.model, P, R, b.pad_id, b.al.batch_size, show_progress=False)
    m, _u = _timed(b, lambda low=low: score_pairs(low, P, R, b.pad_id, b.al.batch_size, passes=b.al.mc_passes,
                                         show_progress=False))
    bf = score_pairs(low, P, R, b.pad_id, b.al.batch_size, show_progress=False)
    rel = float(np.max(np.abs(bf.pe - fp32.pe) / np.maximum(1, np.abs(fp32.pe))))
    order = [list(np.argsort(-x.mean(1))) for x in (fp32.pe, bf.pe)]
    same_rank = order[0] == order[1]
    del low
    return _row("scoring", "ours in bf16 (model copy)", m, ref,
                f"PE max rel diff vs fp32 {rel:.1e}; same PE ranking: {same_rank}")


# --- training variants -----------------------------------------------------------------------


@dataclass(frozen=True)
class TrainVariant:
    """How a training step is built; the defaults are star.engine.training.train_adapter's choices."""

    fixed_len: int | None = None  # pad every batch to this many tokens (None: dynamic padding)
    bucket: bool = True  # length-bucketed shuffled batches (False: plain shuffle)
    hf_loss: bool = False  # HF loss on full (B, T, V) logits with labels -100 (False: response-only head)
    precision: str | None = None  # train.precision for the forward (None: the config's, as ours)


def _hf_loss(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """The Hugging Face loss: full (B, T, V) logits, labels -100 except on the response tokens."""
    labels = torch.full_like(batch.input_ids, -100)  # (B, T)
    follows = batch.predict_mask[:, :-1]  # logits at t predict token t+1
    labels[:, 1:][follows] = batch.input_ids[:, 1:][follows]
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss


def _train_batches(lengths: Sequence[int], size: int, rng: np.random.Generator, bucket: bool) -> Iterator[list[int]]:
    if bucket:
        yield from length_batches(lengths, size, rng)
    else:
        order = rng.permutation(len(lengths))
        yield from ([int(i) for i in order[s : s + size]] for s in range(0, len(order), size))


def train_variant(model: nn.Module, prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int,
                  config, seed: int, v: TrainVariant) -> dict:
    """train_adapter's loop with the variant's padding, batching and loss."""
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    total = -(-len(prompts) // config.batch_size) * config.epochs
    optimizer = make_optimizer(model, config)
    scheduler = linear_schedule(optimizer, total, config.warmup_ratio)
    amp = autocast_dtype(v.precision or config.precision, device)
    model.train()
    padded = real = 0
    for epoch in range(config.epochs):
        for idx in _train_batches(lengths, config.batch_size, rng, v.bucket):
            batch = collate_pairs([prompts[i] for i in idx], [responses[i] for i in idx], pad_id)
            batch = pad_batch(batch, v.fixed_len, pad_id) if v.fixed_len else batch
            padded, real = padded + batch.input_ids.numel(), real + int(batch.attention_mask.sum())
            batch = batch.to(device)
            with _seeded(lambda idx=idx, e=epoch: [row_seed(seed, i, e) for i in idx], batch):
                with autocast_to(amp, device):
                    loss = _hf_loss(model, batch) if v.hf_loss else response_loss(model, batch)
                loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    return {"padding_share": 1 - real / padded}


TRAIN_VARIANTS: dict[str, tuple[TrainVariant, str]] = {
    "loop, all switches as ours": (TrainVariant(), "must match 'ours' (sanity check of the variant loop)"),
    "- dynamic padding (every batch padded to 384)": (TrainVariant(fixed_len=release.RELEASE_MAX_LEN), "fixed-length padding"),
    "- length bucketing (plain shuffle, dynamic padding)": (TrainVariant(bucket=False), "padding to each batch's longest"),
    "- response-only LM head (HF loss on full logits)": (TrainVariant(hf_loss=True), "labels -100 on prompt and pad"),
    "- bf16 autocast (fp32 forward)": (TrainVariant(precision="fp32"), "train.precision=fp32"),
}


def training_rows(b, n: int) -> list[dict]:
    """The training ablations on the first n labelled examples (one epoch each)."""
    P, R = (b.train.prompts or b.score.prompts)[:n], (b.train.responses or b.score.responses)[:n]
    cfg, seed = replace_epochs(b.train_cfg), b.args.seed
    fresh = lambda: reset_adapter(b.model, seed)
    ref, _ = _timed(b, lambda: train_adapter(b.model, P, R, b.pad_id, cfg, seed, show_progress=False), fresh)
    rows = [_row("training", "ours: star.engine.training.train_adapter", ref, ref, "reference")]
    for name, (variant, note) in TRAIN_VARIANTS.items():
        m, info = _timed(b, lambda v=variant: train_variant(b.model, P, R, b.pad_id, cfg, seed, v), fresh)
        rows.append(_row("training", name, m, ref, f"{note}; padding {100 * info['padding_share']:.0f}% of tokens"))
    amp = autocast_dtype(cfg.precision, b.device)
    m, _ = _timed(b, lambda: release.train_padded(b.model, P, R, b.pad_id, cfg, seed, autocast=amp), fresh)
    rows.append(_row("training", "release: padded to 384, HF full-logits loss", m, ref,
                     f"the baseline, in ours' precision ({'bf16' if amp is not None else 'fp32'})"))
    m, _ = _timed(b, lambda: release.train_padded(b.model, P, R, b.pad_id, cfg, seed), fresh)
    rows.append(_row("training", "release, in fp32", m, ref, "the baseline without autocast"))
    return rows


def replace_epochs(config, epochs: int = 1):
    return config.model_copy(update={"epochs": epochs})


# --- evaluation variants ---------------------------------------------------------------------


def eval_rows(b, n: int) -> list[dict]:
    """Generation choices on the first n test examples: length cap, early stop, batching."""
    P, stop, size = b.test.prompts[:n], b.task.answer_complete, b.eval_cfg.batch_size
    cap = b.eval_cfg.max_new_tokens

    def gen(cap: int, size: int, until=stop):
        return lambda: generate(b.model, b.tokenizer, P, cap, size, is_complete=until, show_progress=False)

    ref, _ = _timed(b, gen(cap, size))
    rows = [_row("evaluation", f"ours: batched, KV cache, {cap} new tokens max, stop at the answer", ref, ref, "reference")]
    variants = {
        f"- stop at the answer ({cap} tokens max, EOS only)": gen(cap, size, until=None),
        "- answer-length cap (256 max, stop at the answer)": gen(256, size),
        "- batching (one example at a time)": gen(cap, 1),
        "release: always 256 new tokens (batched)": lambda: release.generate_fixed(b.model, b.tokenizer, P, size),
    }
    for name, fn in variants.items():
        m, _ = _timed(b, fn)
        rows.append(_row("evaluation", name, m, ref, ""))
    return rows


# --- table -----------------------------------------------------------------------------------


def _row(group: str, name: str, m: speedlib.Measurement, ref: speedlib.Measurement, note: str,
         added: bool = False) -> dict:
    return {"group": group, "variant": name, "seconds": m.seconds, "vs_ours": m.seconds / ref.seconds,
            "extra_mb": m.extra_mb, "note": note, "added_cost": added}


GROUPS = {"training": training_rows, "scoring": scoring_rows, "eval": eval_rows}


def run(b, groups: str, trained: dict) -> list[dict]:
    """Every row of the requested groups ('all' or a comma list of training, scoring, eval).

    Scoring and evaluation run with the adapter `trained` (peft state dict) live, as in a round.
    """
    from peft import set_peft_model_state_dict

    names = list(GROUPS) if groups == "all" else [g.strip() for g in groups.split(",") if g.strip()]
    unknown = set(names) - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown ablation group(s) {sorted(unknown)}; choose from {list(GROUPS)} or 'all'")
    rows = []
    for name in [g for g in GROUPS if g in names]:
        if name != "training":
            set_peft_model_state_dict(b.model, trained)
        rows += GROUPS[name](b, b.args.ablation_n)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| phase | variant (one change from ours) | seconds | x ours | extra MB | note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        mb = "n/a" if r["extra_mb"] is None else f"{r['extra_mb']:,.0f}"
        lines.append(f"| {r['group']} | {r['variant']} | {r['seconds']:.2f} | {r['vs_ours']:.2f} | {mb} | {r['note']} |")
    return "\n".join(lines)
