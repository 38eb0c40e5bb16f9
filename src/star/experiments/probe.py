"""`star probe`: the paper's two probes, uncertainty gap and calibration, as one command on one config.

For each labelled-set size (0 = the base model), a fresh adapter is trained on a seeded random
labelled set of that size (nested: each set extends the smaller ones), then
- *uncertainty gap*: on a fixed probe set (a seeded sample of the pool, in no labelled set), the
  tuned model's greedy answers are graded against the gold labels (simulation), and the AUROC of
  u_base (adapter off) and u_full (adapter on, deterministic and K MC passes), PE and ME, at
  ranking its wrong answers above its right ones;
- *calibration*: the ECE on the test set of the tuned model with all constraint terms off, with
  the config's, and with each term alone at each strength of the sweep (`train.weight_decay_b`,
  `train.b_penalty`: retrained; `al.mc_dropout_p`: confidence averaged over K dropout passes).
Output: probe.json (every number, the config, the seeds), probe.md and PNG figures
(probe_output.py). probe.json is rewritten after every size; the same command skips sizes it holds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from star.al.seeds import derive_seed
from star.config import RunConfig
from star.engine.adapter import adapter_disabled, lora_parameters, reset_adapter
from star.engine.batching import encode_prompts, encode_responses
from star.engine.modeling import load_model
from star.engine.training import train_adapter
from star.errors import ConfigError
from star.experiments.probe_measure import ProbeData, evaluate_test, gap_summary, mc_calibration, probe_answers
from star.experiments.probe_output import write_outputs
from star.store.io import read_json, write_json
from star.tasks import Example, build_task

WEIGHT_DECAY_B, B_PENALTY, MC_DROPOUT_P = "train.weight_decay_b", "train.b_penalty", "al.mc_dropout_p"
STRENGTH_KEYS = (WEIGHT_DECAY_B, B_PENALTY, MC_DROPOUT_P)
_STRENGTH_HINT = ("write --strength KEY=V1,V2 with KEY one of " + ", ".join(STRENGTH_KEYS)
                  + ", e.g. --strength train.b_penalty=0.1,1")


def _number(text: str, option: str, hint: str, kind: type = float) -> Any:
    try:
        value = kind(text.strip())
    except ValueError:
        whole = "whole " if kind is int else ""
        raise ConfigError(f"{option}: {text.strip()!r} is not a {whole}number", hint=hint) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{option}: {text.strip()!r} must be 0 or more", hint=hint)
    return value


@dataclass(frozen=True)
class ProbeSettings:
    """What to probe: labelled-set sizes, probe-set size and the strengths of each constraint term."""

    sizes: tuple[int, ...]
    probe_size: int = 64
    strengths: tuple[tuple[str, tuple[float, ...]], ...] = ()

    @classmethod
    def parse(cls, sizes: str, probe_size: int, strengths: Sequence[str] = ()) -> ProbeSettings:
        """From the command's options: '0,16,64', 64, ['train.b_penalty=0.1,1', ...]; one ConfigError if bad."""
        hint = "write --sizes as labelled-set sizes, e.g. --sizes 0,16,64"
        parsed = sorted({_number(s, "--sizes", hint, int) for s in sizes.split(",") if s.strip()})
        if not parsed:
            raise ConfigError("--sizes is empty", hint=hint)
        if probe_size < 2:
            raise ConfigError(f"--probe-size {probe_size} is too small: AUROC needs right and wrong answers",
                              hint="use --probe-size 32 or more")
        sweep: dict[str, list[float]] = {}
        for item in strengths:
            key, sep, values = item.partition("=")
            if not sep or key.strip() not in STRENGTH_KEYS or not values.strip():
                raise ConfigError(f"--strength {item!r}: not KEY=V1,V2 with a constraint term as KEY",
                                  hint=_STRENGTH_HINT)
            nums = [_number(v, f"--strength {key.strip()}", _STRENGTH_HINT) for v in values.split(",") if v.strip()]
            if key.strip() == MC_DROPOUT_P and any(v >= 1 for v in nums):
                raise ConfigError(f"--strength {item!r}: a dropout probability must be below 1", hint=_STRENGTH_HINT)
            sweep.setdefault(key.strip(), []).extend(nums)
        return cls(tuple(parsed), probe_size, tuple((k, tuple(sorted(set(v)))) for k, v in sweep.items()))

    def check(self, config: RunConfig, pool_size: int) -> None:
        """Refuse what the probe cannot do with this config and pool, before the model loads."""
        if config.al.response != "generated":
            raise ConfigError(f"star probe scores the model's own greedy answers; al.response={config.al.response!r}",
                              hint="drop the al.response setting (or set al.response=generated) for the probe")
        if pool_size < self.probe_size + max(self.sizes):
            raise ConfigError(f"the pool has {pool_size} examples; the probe needs --probe-size {self.probe_size} +"
                              f" the largest of --sizes {max(self.sizes)} = {self.probe_size + max(self.sizes)}",
                              hint="raise task.pool_size, or lower --probe-size or --sizes")


@dataclass(frozen=True)
class Variant:
    """One calibration setting: how the adapter is trained, and whether confidence is MC-averaged (at p)."""

    name: str
    term: str | None  # the constraint term varied, None for 'off' and 'config'
    strength: float | None
    weight_decay_b: float
    b_penalty: float
    mc_dropout_p: float | None = None

    @property
    def training(self) -> tuple[float, float]:
        return self.weight_decay_b, self.b_penalty


def variants(config: RunConfig, settings: ProbeSettings) -> list[Variant]:
    """'off' (every constraint term off), 'config' (its B decay and penalty), then each term alone at each strength."""
    out = [Variant("off", None, 0.0, 0.0, 0.0),
           Variant("config", None, None, config.train.weight_decay_b, config.train.b_penalty)]
    for key, values in settings.strengths:
        for v in values:
            out.append(Variant(f"{key}={v:g}", key, v, v if key == WEIGHT_DECAY_B else 0.0,
                               v if key == B_PENALTY else 0.0, v if key == MC_DROPOUT_P else None))
    return out


def split_pool(n_pool: int, probe_size: int, seed: int) -> tuple[list[int], list[int]]:
    """(probe-set indices, sorted; every other index in a seeded order: labelled set of size s = its first s)."""
    drawn = np.random.default_rng(derive_seed(seed, 0, "probe")).choice(n_pool, probe_size, replace=False)
    probe = sorted(int(i) for i in drawn)
    taken = set(probe)
    rest = [i for i in range(n_pool) if i not in taken]
    order = np.random.default_rng(derive_seed(seed, 0, "labelled")).permutation(len(rest))
    return probe, [rest[int(j)] for j in order]


def _json_safe(value: Any) -> Any:
    """NaN and infinities as null (JSON has no NaN); tuples as lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _open_record(path: Path, header: dict[str, Any]) -> dict[str, Any]:
    """probe.json's record: the one there when it was written with the same header (resume), else a new one."""
    if not path.is_file():
        return {**header, "base": None, "sizes": []}
    old = read_json(path)
    differing = [k for k in header if old.get(k) != header[k]]
    if differing:
        raise ConfigError(f"{path} was written by a probe with other settings ({', '.join(differing)} differ)",
                          hint="use a new --out folder, or the same config, --probe-size and --strength as before")
    return old


def probe(config: RunConfig, settings: ProbeSettings, out: str | Path, show_progress: bool = True) -> Path:
    """Run the probes for every size of `settings` not yet in OUT/probe.json, then write probe.md and the figures."""
    task = build_task(config.task)
    pool, test = task.load("pool"), task.load("test")
    settings.check(config, len(pool))
    probe_idx, order = split_pool(len(pool), settings.probe_size, config.seed)
    header = _json_safe({
        "config": config.model_dump(mode="json"), "probe_size": settings.probe_size,
        "strengths": {k: list(v) for k, v in settings.strengths},
        "seeds": {"seed": config.seed, "probe_set": derive_seed(config.seed, 0, "probe"),
                  "labelled_order": derive_seed(config.seed, 0, "labelled"),
                  "per_size": "adapter init derive_seed(seed, labels, 'init'), data order and training dropout"
                              " derive_seed(seed, labels, 'train'), MC passes derive_seed(seed, labels, 'mc')"},
        "probe_ids": [pool[i].id for i in probe_idx], "test_ids": [e.id for e in test],
    })
    out = Path(out)
    path = out / "probe.json"
    record = _open_record(path, json.loads(json.dumps(header)))
    todo = [s for s in settings.sizes if s not in {r["labels"] for r in record["sizes"]}]
    if todo:
        data = _probe_data(config, task, [pool[i] for i in probe_idx], test, show_progress)
        if record["base"] is None:
            with adapter_disabled(data.loaded.model):
                record["base"] = probe_answers(data, 0, mc=False)
            write_json(path, _json_safe(record))
        for size in tqdm(todo, desc="probe: labelled-set sizes", unit="size", disable=not show_progress):
            labelled = [pool[i] for i in order[:size]]
            record["sizes"] = sorted(record["sizes"] + [measure_size(data, record["base"], labelled, size,
                                                                     variants(config, settings))],
                                     key=lambda r: r["labels"])
            write_json(path, _json_safe(record))
    write_outputs(record, out)
    return out


def _probe_data(config: RunConfig, task: Any, probe_set: list[Example], test: list[Example],
                show_progress: bool) -> ProbeData:
    loaded = load_model(config.model, config.lora, show_progress=show_progress)
    tok, cut = loaded.tokenizer, config.train.max_prompt_tokens
    def prompts(examples: list[Example]) -> list[list[int]]:
        return encode_prompts(tok, [task.prompt(e.question) for e in examples], cut, system=task.system_prompt)

    return ProbeData(config, task, loaded, probe_set, prompts(probe_set), test, prompts(test), show_progress)


def train_live(data: ProbeData, labelled: list[Example], size: int, training: tuple[float, float]) -> dict[str, float]:
    """A fresh adapter (seeded by size) trained on `labelled` with (weight_decay_b, b_penalty); what training did."""
    cfg, tok, model = data.config, data.loaded.tokenizer, data.loaded.model
    reset_adapter(model, derive_seed(cfg.seed, size, "init"))
    prompts = encode_prompts(tok, [data.task.prompt(e.question) for e in labelled], cfg.train.max_prompt_tokens,
                             system=data.task.system_prompt)
    responses = encode_responses(tok, [data.task.target_for(e, e.answer or "") for e in labelled],
                                 cfg.train.max_answer_tokens)
    train = cfg.train.model_copy(update={"weight_decay_b": training[0], "b_penalty": training[1]})
    stats = train_adapter(model, prompts, responses, data.pad_id, train, derive_seed(cfg.seed, size, "train"),
                          data.show_progress)
    b_norm = float(sum(float((b.detach().float() ** 2).sum()) for b in lora_parameters(model)[1]) ** 0.5)
    return {"steps": stats.steps, "final_loss": stats.final_loss, "mean_loss": stats.mean_loss,
            "seconds": stats.seconds, "b_norm": b_norm}


def measure_size(data: ProbeData, base: dict[str, list], labelled: list[Example], size: int,
                 all_variants: list[Variant]) -> dict[str, Any]:
    """Both probes at one labelled-set size: the gap with the config's adapter, calibration of every variant.

    Each distinct (weight_decay_b, b_penalty) is trained once, from the same seeded init and data order;
    the MC variants average the confidence of the 'off' adapter. Size 0 is the base model (adapter off).
    """
    start, cfg = time.perf_counter(), data.config
    mc_seed = derive_seed(cfg.seed, size, "mc")
    ps = [v.mc_dropout_p for v in all_variants if v.mc_dropout_p is not None]
    if size == 0:
        with adapter_disabled(data.loaded.model):
            results, train_log = {None: _calibrate(data, ps, mc_seed)}, {}
        tuned = {**base, "pe_mc": base["pe"], "me_mc": base["me"]}  # no adapter: MC passes equal the one pass
    else:
        config_key = next(v.training for v in all_variants if v.name == "config")
        results, train_log, tuned = {}, {}, None
        for key in dict.fromkeys([config_key, (0.0, 0.0)] + [v.training for v in all_variants]):
            train_log[f"weight_decay_b={key[0]:g},b_penalty={key[1]:g}"] = train_live(data, labelled, size, key)
            if key == config_key:
                tuned = probe_answers(data, mc_seed, mc=cfg.al.mc_dropout and cfg.al.mc_passes > 1)
            results[key] = _calibrate(data, ps if key == (0.0, 0.0) else [], mc_seed)
    calibration = [_variant_row(v, results[v.training if size else None]) for v in all_variants]
    return {"labels": size, "labelled_ids": [e.id for e in labelled], "gap": gap_summary(base, tuned),
            "probe_answers": tuned, "calibration": calibration, "training": train_log,
            "seconds": time.perf_counter() - start}


def _calibrate(data: ProbeData, ps: list[float], mc_seed: int) -> dict[str, Any]:
    """The live model's test-set accuracy, ECE and mean confidence, and the MC-averaged ECE at each p of `ps`."""
    result = evaluate_test(data)
    return {"accuracy": result.accuracy, "ece": result.ece, "mean_confidence": result.mean_confidence,
            "mc": mc_calibration(data, result, ps, mc_seed)}


def _variant_row(v: Variant, r: dict[str, Any]) -> dict[str, Any]:
    """One calibration row: the variant's settings and its accuracy, ECE and mean confidence."""
    row = {"variant": v.name, "term": v.term, "strength": v.strength, "weight_decay_b": v.weight_decay_b,
           "b_penalty": v.b_penalty, "mc_dropout_p": v.mc_dropout_p, "accuracy": r["accuracy"]}
    if v.mc_dropout_p is None:
        return {**row, "ece": r["ece"], "mean_confidence": r["mean_confidence"]}
    return {**row, **r["mc"][v.mc_dropout_p]}

