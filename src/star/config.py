"""Typed, validated run configuration: YAML in and out, dotted command-line overrides.

Every section is a pydantic model with `extra="forbid"`, so an unknown option is an error.
`load_config` collects *every* problem and raises one ConfigError naming each field,
its value and the fix, before any model is loaded.

Size: over 350 lines, because every section of the run's config (model, task, al, lora, train,
eval, llm_annotator, ...) is one validated model here, and the README's reference is generated from it.
"""

from __future__ import annotations

import copy
import os
import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from star.al.cost import CostUnit
from star.al.schedules import SCHEDULES, lambda_at
from star.al.stopping import RULES as STOP_RULES
from star.al.strategies import STRATEGIES, get_strategy
from star.al.uncertainty import DISAGREEMENT_RESPONSES
from star.errors import ConfigError, PoolExhaustedError

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
#: Names `al.annotator` accepts. The annotators live above this layer (star.annotation.registry);
#: tests/unit/test_config.py pins this tuple to that registry.
ANNOTATOR_NAMES = ("oracle", "human", "llm")
#: Names `tracking.log_with` accepts: accelerate's trackers that star.tracking drives (a test pins the two).
TRACKER_NAMES = ("tensorboard", "mlflow", "wandb")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which base model to load, and how."""

    name: str = Field(DEFAULT_MODEL, description="HF model id, local path, or 'embedded:smollm2-135m-instruct'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N.")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 = all cores.")
    load_in_4bit: bool = Field(False, description="QLoRA: load the base in 4-bit NF4 (bitsandbytes, CUDA only).")


class TaskConfig(_Section):
    """Which task, where its data lives, and how much of it to use."""

    name: Literal["arithmetic", "gsm8k", "boolq", "obqa", "jsonl"] = Field("arithmetic", description="arithmetic (built-in), gsm8k, boolq, obqa or jsonl (your own file).")
    path: str | None = Field(None, description="Your data (gsm8k, boolq, obqa, jsonl): a folder with train and test files"
                             " (.jsonl, .json, .csv or .parquet), one such file, or a folder written by save_to_disk.")
    hub: str | None = Field(None, description="A Hugging Face Hub dataset instead of task.path (needs a network, or"
                            " HF_HUB_OFFLINE=1 and a cached copy; pip install \"star-al[data]\").")
    hub_config: str | None = Field(None, description="task.hub: the dataset's configuration (subset), if it has several.")
    pool_split: str = Field("train", description="Split of the pool: of a save_to_disk DatasetDict or task.hub, or"
                            " the file name SPLIT.EXT in a folder.")
    test_split: str | None = Field(None, description="Split of the test set; null: 'test' if there is one, else"
                                   " task.test_size rows held out of the pool (seeded, never in the pool).")
    pool_size: int = Field(160, ge=1, description="Unlabelled pool size (a seeded sample of the train split).")
    test_size: int = Field(40, ge=1, description="Test examples evaluated after every round (a cap; rows held out"
                           " of the pool when the data has no test split).")
    seed: int = Field(0, description="Seed of data generation and sub-sampling.")
    max_steps: int = Field(4, ge=1, le=8, description="arithmetic: most operations in a problem.")
    question_field: str = Field("question", description="File tasks: field (column) holding the question.")
    answer_field: str = Field("answer", description="File tasks: field (column) holding the answer.")
    prompt_template: str | None = Field(None, description="File tasks: the question built from a row's columns instead"
                                        " of question_field, e.g. 'Passage: {passage}\\nQuestion: {question}'.")
    system_prompt: str | None = Field(None, description="System message before every prompt, through the model's chat"
                                      " template (no template: a line above the prompt).")
    answer_type: Literal["number", "choice", "text"] = Field("text", description="jsonl: how answers are compared.")
    choices: list[str] | None = Field(None, description="jsonl with answer_type=choice: the allowed answers.")
    option_style: Literal["letter", "cloze"] = Field(
        "letter", description="obqa: letter lists the options in the prompt and the answer is the letter A-D; cloze"
                              " puts the question stem alone to the model and scores (and trains) each option's"
                              " text as the answer, as lm-evaluation-harness. Labels are letters either way.")


#: What each stopping rule's threshold option is, for the error when a named rule lacks it.
_STOP_THRESHOLDS = {"uncertainty": ("uncertainty", "0.5, a mean stop-set PE"),
                    "accuracy": ("accuracy", "0.9, a test accuracy"), "budget": ("budget", "100, in al.cost.unit")}


class StopConfig(_Section):
    """al.stop: stopping rules evaluated after every round (star.al.stopping), recorded in metrics.json."""

    rules: list[str] = Field(default_factory=list, description="Rules: kappa (stabilising predictions on the stop"
                             " set), uncertainty (mean stop-set PE), accuracy (test accuracy: simulation, or a"
                             " labelled dev set as test set), budget (total cost); a list or comma-separated; [] = none.")
    enforce: bool = Field(True, description="Stop the run after the first round at which a rule holds (the first"
                          " in al.stop.rules); false: evaluate and record only.")
    kappa: float = Field(0.99, gt=-1.0, le=1.0, description="kappa: the mean Cohen's kappa between successive models'"
                         " stop-set answers over the last al.stop.window pairs at or above which it stops.")
    window: int = Field(3, ge=1, description="kappa: successive pairs averaged (small-text's KappaAverage: 3).")
    uncertainty: float | None = Field(None, ge=0.0, description="uncertainty: the mean PE of the model's stop-set"
                                      " answers (greedy answer, or chosen option) at or below which it stops.")
    accuracy: float | None = Field(None, ge=0.0, le=1.0, description="accuracy: the test accuracy at or above which"
                                   " it stops.")
    budget: float | None = Field(None, gt=0.0, description="budget: total annotation cost (al.cost.unit; labels by"
                                 " default) at which it stops, or once the rest cannot pay for one more label.")
    set_size: int = Field(100, ge=1, description="kappa, uncertainty: examples in the stop set (a fixed seeded sample"
                          " of the pool), answered by every model once after training.")

    @field_validator("rules", mode="before")
    @classmethod
    def _listed(cls, v: Any) -> Any:
        """A single name or 'a,b' (as typed on the command line) is a list of names."""
        if v is None:
            return []
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @model_validator(mode="after")
    def _named_rules(self) -> StopConfig:
        """Every rule is known, listed once, and has its threshold."""
        unknown = [name for name in self.rules if name not in STOP_RULES]
        if unknown:
            raise ValueError(f"unknown stopping rule {', '.join(map(repr, unknown))} in al.stop.rules; choose from"
                             f" {', '.join(STOP_RULES)}")
        if len(set(self.rules)) != len(self.rules):
            raise ValueError(f"al.stop.rules={self.rules} names a rule twice; list each once")
        lacking = [name for name in self.rules if name in _STOP_THRESHOLDS
                   and getattr(self, _STOP_THRESHOLDS[name][0]) is None]
        if lacking:
            raise ValueError("; ".join(f"al.stop.rules names {name}, which needs al.stop.{_STOP_THRESHOLDS[name][0]}:"
                                       f" set it (e.g. al.stop.{_STOP_THRESHOLDS[name][0]}={_STOP_THRESHOLDS[name][1]})"
                                       f" or drop {name} from al.stop.rules" for name in lacking))
        return self

    @property
    def needs_stop_set(self) -> bool:
        """Whether a rule reads the models' answers on the stop set (kappa, uncertainty)."""
        return any(name in ("kappa", "uncertainty") for name in self.rules)


class CostConfig(_Section):
    """al.cost: what a label costs (star.al.cost): the unit of al.stop.budget, cost-aware ranking, the report's cost."""

    unit: CostUnit = Field("label", description="Cost of one label: label (1 each), chars (characters of the answer"
                           " as given) or tokens (the model tokenizer's tokens of the answer's training target).")
    aware: bool = Field(False, description="Rank candidates by score per unit of estimated cost: (min-max score +"
                        " 0.001) / cost, the estimate from the model's own answer (needs unit chars or tokens).")

    @model_validator(mode="after")
    def _aware_needs_lengths(self) -> CostConfig:
        """With unit=label every candidate costs 1, so cost-aware ranking would change nothing."""
        if self.aware and self.unit == "label":
            raise ValueError("al.cost.aware ranks by score per unit of cost, and al.cost.unit=label costs every label"
                             " 1; set al.cost.unit=chars or tokens, or al.cost.aware=false")
        return self


class ActiveLearningConfig(_Section):
    """The active-learning loop: budget, rounds, strategy and scoring."""

    initial: int = Field(16, ge=1, description="Random labels before round 0 (release: 500).")
    query: int = Field(16, ge=1, description="Labels acquired per query round (release: 500).")
    rounds: int = Field(4, ge=1, description="Models trained, T (release: 10); T-1 queries.")
    strategy: str = Field("pe-dynamic", description="random, entropy, pe, entropy-subtract, pe-subtract, entropy-dynamic,"
                          " pe-dynamic; bald, bald-dynamic (al.response=options), pe-spread, pe-spread-dynamic"
                          " (generated or gold): disagreement of the MC passes; k-center (coreset), idds: diversity of"
                          " the base model's prompt embeddings; an uncertainty one with +diverse appended (e.g."
                          " pe-dynamic+diverse): its ranking spread, the top of each of k clusters of the embeddings.")
    schedule: str = Field("linear", description="lambda(t) schedule of the dynamic strategies: linear, cosine, exponential, constant.")
    schedule_horizon: int | None = Field(None, ge=1, description="T in lambda(t); default: rounds.")
    schedule_value: float = Field(0.5, ge=0.0, le=1.0, description="constant schedule's lambda / exponential's decay.")
    response: Literal["generated", "gold", "options"] = Field("generated", description="Scored response: the model's greedy answer (label-free), the gold answer (simulation only), or the distribution over a closed task's answer options (label-free).")
    mc_passes: int = Field(3, ge=1, description="K stochastic passes with LoRA dropout on (release K=3).")
    mc_dropout: bool = Field(True, description="Keep LoRA dropout active while scoring the tuned model.")
    mc_dropout_p: float | None = Field(None, ge=0.0, lt=1.0, description="LoRA dropout p of the MC passes while"
                                       " scoring; null: lora.dropout. Training keeps lora.dropout.")
    score_subsample: int | None = Field(32, ge=1, description="Score only a seeded random subsample of the unlabelled pool each round (null: all).")
    batch_size: int = Field(32, ge=1, description="Pool examples per generation / scoring batch (MC passes included).")
    max_new_tokens: int = Field(64, ge=1, description="Greedy tokens generated per pool example (generated response).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "fp32", description="Pool generation and scoring matmuls: fp32, bf16 autocast (~2x faster on a CPU with"
                            " AVX512-BF16, but greedy answers, hence selections, can change), or auto (bf16 where fast).")
    score_from_generation: bool = Field(True, description="One deterministic pass (the base model, or"
                                        " al.mc_dropout off): PE/ME from the greedy generation's own logits, no"
                                        " second forward (equal within float rounding); false: a teacher-forced pass.")

    annotator: str = Field("oracle", description="Who labels: oracle (simulation, the dataset's labels), human, or llm"
                                                   " (a larger LLM drafts them: section llm_annotator).")
    stop: StopConfig = Field(default_factory=StopConfig, description="Stopping rules (al.stop.*).")
    cost: CostConfig = Field(default_factory=CostConfig, description="Annotation cost (al.cost.*).")

    @field_validator("annotator", "strategy", "schedule")
    @classmethod
    def _registered(cls, v: str, info: ValidationInfo) -> str:
        """Each of these names must be one the run can build."""
        names = {"annotator": ANNOTATOR_NAMES, "strategy": tuple(STRATEGIES), "schedule": tuple(SCHEDULES)}[info.field_name]
        if v not in names:
            raise ValueError(f"unknown {info.field_name} {v!r}; choose one of {', '.join(names)}")
        return v

    @property
    def labels_needed(self) -> int:
        """Labels a whole run acquires: al.initial + (al.rounds - 1) x al.query."""
        return self.initial + (self.rounds - 1) * self.query

    def lambda_at(self, t: int) -> float:
        """lambda(t) of the dynamic mix after model t (0 = the model trained on L0)."""
        return lambda_at(self.schedule, t, self.schedule_horizon or self.rounds, self.schedule_value)


class LoraSettings(_Section):
    """LoRA adapter shape (release: r 64, alpha 16, dropout 0.1, all linear projections)."""

    r: int = Field(8, ge=1, description="Rank (release: 64; 8 suits a 135M model on a CPU).")
    alpha: float = Field(16.0, gt=0, description="Scale alpha; the update is (alpha / r) B A.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on A's input: regularises training and drives MC dropout.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Names of the linear layers that get an adapter.",
    )


class TrainConfig(_Section):
    """One round of LoRA training (constraint LoRA: weight decay on B only)."""

    lr: float = Field(5e-4, gt=0, description="Peak learning rate, linear decay (release: 1.5e-4).")
    epochs: int = Field(3, ge=1, description="Passes over the labelled set per round (release: 3).")
    batch_size: int = Field(8, ge=1, description="Examples per optimizer step (release: 8).")
    weight_decay_b: float = Field(0.5, ge=0.0, description="Decoupled (AdamW) weight decay on lora_B, as the release:"
                                                           " B shrinks by lr x beta per step.")
    b_penalty: float = Field(0.0, ge=0.0, description="Coupled L2 penalty beta * sum(B^2) added to the loss, as the"
                                                      " paper's objective: gradient 2 beta B (0 = off). One process or DDP.")
    weight_decay_a: float = Field(0.0, ge=0.0, description="Weight decay on lora_A (the method: 0).")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of steps of linear warm-up (release: 0).")
    warm_start: bool = Field(False, description="Continue from last round's adapter instead of a fresh one.")
    max_prompt_tokens: int = Field(128, ge=8, description="Prompts cut to this many tokens (release: 128).")
    max_answer_tokens: int = Field(256, ge=4, description="Answers cut to this many tokens (release: 256).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward: less memory, ~30% slower.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Training matmuls: bf16 autocast (LoRA weights, optimizer and loss stay fp32) or fp32;"
                            " auto: bf16 where the device has fast bf16 (CUDA, or a CPU with AVX512-BF16/AMX).")


def has_options(task: TaskConfig) -> bool:
    """Whether the task's answers are a closed set of options (tests pin this to each task's `choices`)."""
    return task.name in ("boolq", "obqa") or (task.name == "jsonl" and task.answer_type == "choice")


class EvalConfig(_Section):
    """Evaluation after every round."""

    mode: Literal["auto", "options", "generate"] = Field(
        "auto", description="options: the answer option with the highest log-likelihood after the prompt (as"
                            " lm-evaluation-harness; closed tasks); generate: the greedy answer, extracted; auto:"
                            " options for boolq, obqa and jsonl with answer_type=choice, else generate.")
    max_new_tokens: int = Field(64, ge=1, description="Greedy tokens generated per test example.")
    batch_size: int = Field(32, ge=1, description="Test examples per batch (generation or option scoring).")
    ece_bins: int = Field(10, ge=2, description="Equal-width confidence bins of ECE.")

    def resolved_mode(self, task: TaskConfig) -> Literal["options", "generate"]:
        """The evaluation mode for `task`: `mode`, with auto resolved by whether the task has answer options."""
        if self.mode == "auto":
            return "options" if has_options(task) else "generate"
        return self.mode


class TrackingConfig(_Section):
    """Experiment tracking through accelerate's trackers (main process only; star.tracking)."""

    log_with: list[str] = Field(default_factory=list, description="Trackers: tensorboard, mlflow, wandb (a list, or"
                                " comma-separated); none by default. Needs pip install \"star-al[tracking]\".")
    project: str = Field("star", min_length=1, description="W&B project and MLflow experiment name.")
    run_name: str | None = Field(None, description="The tracker run's name; default: output_dir.")
    logging_dir: str | None = Field(None, description="Folder of the trackers' local files (TensorBoard events, W&B"
                                    " files, the default MLflow store); default: the run directory's tracking/ folder.")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow store (http://server, sqlite:///file.db,"
                                            " file:DIR); default: $MLFLOW_TRACKING_URI, else logging_dir/mlruns.")
    wandb_entity: str | None = Field(None, description="W&B team or user; default: $WANDB_ENTITY or your own.")

    @field_validator("log_with", mode="before")
    @classmethod
    def _listed(cls, v: Any) -> Any:
        """A single name or 'a,b' (as typed on the command line) is a list of names."""
        if v is None:
            return []
        if isinstance(v, str):
            return [part.strip() for part in v.split(",") if part.strip()]
        return v

    @field_validator("log_with")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        """Every name is a tracker star drives; repeats dropped."""
        unknown = [name for name in v if name not in TRACKER_NAMES]
        if unknown:
            raise ValueError(f"unknown tracker {', '.join(map(repr, unknown))}; choose from {', '.join(TRACKER_NAMES)}")
        return list(dict.fromkeys(v))


DEFAULT_LLM_SYSTEM = ("You label examples for training a smaller model. Answer the question correctly and"
                      " in the requested format.")
_PROMPT_FIELDS = ("question", "instruction")


class LLMAnnotatorConfig(_Section):
    """al.annotator=llm: a larger LLM drafts the labels (a local model, or an OpenAI-compatible endpoint)."""

    backend: Literal["local", "openai"] = Field(
        "local", description="local: a Hugging Face model or folder, loaded with transformers; openai: an"
                             " OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp server, Ollama, OpenAI).")
    model: str = Field(DEFAULT_MODEL, description="local: HF model id, folder or 'embedded:smollm2-135m-instruct';"
                                                  " openai: the model name the endpoint serves.")
    base_url: str | None = Field(None, description="openai (required): the API root, e.g. http://localhost:8000/v1.")
    api_key_env: str | None = Field(None, description="openai: environment variable holding the API key (read at"
                                                      " run time, never stored); null: send no key.")
    system_prompt: str = Field(DEFAULT_LLM_SYSTEM, description="System message ('' for none).")
    prompt: str = Field("{question}\n\n{instruction}", description="User message: {question} is the pool question,"
                                                                   " {instruction} the task's answer format.")
    max_new_tokens: int = Field(256, ge=1, description="Most tokens of one reply.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature (0: greedy; local: 0 only).")
    batch_size: int = Field(8, ge=1, description="local: questions generated together (their labels are committed as"
                                                 " the batch ends); openai asks one at a time.")
    answer_retries: int = Field(2, ge=0, description="Asks again, with the problem explained, when a reply holds no"
                                                     " valid answer; then the fallback labels it.")
    fallback: Literal["human", "oracle"] = Field(
        "human", description="Who labels what the LLM could not: human (the run stops for `star label` / `star"
                             " annotate`) or oracle (simulation: the gold label, recorded as oracle).")
    keep_reasoning: bool = Field(True, description="Number tasks: keep the reply's worked reasoning before '#### N'"
                                                   " in the label (as GSM8K's labels); false: '#### N' only.")
    max_retries: int = Field(5, ge=0, description="openai: retries of a request after 429, 5xx, a timeout or a"
                                                  " refused connection.")
    backoff: float = Field(1.0, ge=0.0, description="openai: seconds before the first retry, doubled each time.")
    timeout: float = Field(60.0, gt=0.0, description="openai: seconds to wait for one response.")
    price_prompt_per_1k: float | None = Field(None, ge=0.0, description="Price per 1,000 prompt tokens (cost in"
                                                                        " metrics and the ledger; null: none).")
    price_completion_per_1k: float | None = Field(None, ge=0.0, description="Price per 1,000 completion tokens.")

    @field_validator("prompt")
    @classmethod
    def _template(cls, v: str) -> str:
        """The template must name {question} and no placeholder other than {question} and {instruction}."""
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as e:
            raise ValueError(f"{e}; write a literal brace as {{{{ or }}}}") from None
        unknown = sorted(fields - set(_PROMPT_FIELDS))
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)}; use {{question}}"
                             " and {instruction}, and write a literal brace as {{ or }}")
        if "question" not in fields:
            raise ValueError("the template must hold {question}, where the pool question goes")
        return v

    @model_validator(mode="after")
    def _backend_options(self) -> LLMAnnotatorConfig:
        """base_url for openai only (and required there); a variable's name in api_key_env; greedy local decoding."""
        if self.api_key_env is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.api_key_env) is None:
            # a model-level error: the message does not echo the value, which may be a key pasted by mistake
            raise ValueError("api_key_env must be the name of an environment variable (e.g. OPENAI_API_KEY), never"
                             " the key itself")
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("backend=openai needs base_url, the API root (e.g. http://localhost:8000/v1)")
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"base_url={self.base_url!r} must start with http:// or https://")
            return self
        for name in ("base_url", "api_key_env"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name} is used only with backend=openai; remove it or set backend=openai")
        if self.temperature != 0:
            raise ValueError("backend=local decodes greedily; set temperature=0")
        return self


class RunConfig(_Section):
    """A whole experiment. `output_dir` receives config.yaml, rounds, labels and adapters."""

    seed: int = Field(0, description="Seed of selection, adapter init, data order and MC dropout.")
    output_dir: str = Field("runs/star", description="Run directory (created; must be new or resumable).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    al: ActiveLearningConfig = Field(default_factory=ActiveLearningConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    llm_annotator: LLMAnnotatorConfig = Field(default_factory=LLMAnnotatorConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _check_budget(self) -> "RunConfig":
        if self.task.pool_size < self.al.labels_needed:
            raise ValueError(
                f"task.pool_size={self.task.pool_size} is smaller than al.initial + (al.rounds - 1) * al.query"
                f" = {self.al.labels_needed}; raise task.pool_size or lower al.initial / al.query / al.rounds"
            )
        return self

    @model_validator(mode="after")
    def _check_eval_mode(self) -> "RunConfig":
        if self.eval.mode == "options" and not has_options(self.task):
            kind = f"task.name={self.task.name!r}" + (f" with answer_type={self.task.answer_type!r}"
                                                      if self.task.name == "jsonl" else "")
            raise ValueError(f"eval.mode=options scores answer options, and {kind} has none; set eval.mode=generate"
                             " (or auto), or use a closed task: boolq, obqa, or jsonl with answer_type=choice")
        return self

    @model_validator(mode="after")
    def _check_disagreement(self) -> RunConfig:
        """bald / pe-spread measure how the tuned model's MC-dropout passes disagree: several passes, with dropout
        on, of the response kind the measure is defined for."""
        al, measure = self.al, get_strategy(self.al.strategy).measure
        if measure not in DISAGREEMENT_RESPONSES:
            return self
        responses = DISAGREEMENT_RESPONSES[measure]
        if al.response not in responses:
            other = "bald, bald-dynamic" if measure == "pe-spread" else "pe-spread, pe-spread-dynamic"
            raise ValueError(f"al.strategy={al.strategy} scores {measure} over al.response={' or '.join(responses)},"
                             f" not al.response={al.response}; set al.response={responses[0]} or use {other}")
        p = self.lora.dropout if al.mc_dropout_p is None else al.mc_dropout_p
        if not al.mc_dropout or al.mc_passes < 2 or p == 0:
            raise ValueError(f"al.strategy={al.strategy} compares MC-dropout passes, and al.mc_dropout={al.mc_dropout},"
                             f" al.mc_passes={al.mc_passes}, dropout p={p} (al.mc_dropout_p, else lora.dropout) give"
                             " none to compare; set al.mc_dropout=true, al.mc_passes>=2 (e.g. 3) and a p > 0")
        return self

    @model_validator(mode="after")
    def _check_option_style(self) -> RunConfig:
        if self.task.name == "obqa" and self.task.option_style == "cloze" and self.eval.mode == "generate":
            raise ValueError("eval.mode=generate grades a letter extracted from the answer, and task.option_style=cloze"
                             " trains the model to answer with the option's text; set eval.mode=options (or auto),"
                             " or task.option_style=letter")
        return self

    def check_pool(self, pool_size: int) -> None:
        """Raise PoolExhaustedError when the task's real pool (`pool_size` examples) cannot fund the run."""
        if pool_size < self.al.labels_needed:
            raise PoolExhaustedError(
                f"the pool of task {self.task.name!r} has {pool_size} examples but the run needs {self.al.labels_needed}"
                f" (al.initial={self.al.initial} + (al.rounds-1)={self.al.rounds - 1} x al.query={self.al.query})",
                hint="lower al.initial, al.query or al.rounds, or use a larger pool",
            )


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}): {err.error_count()} problem(s)"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(config)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {field}: unknown option (value {e['input']!r}); remove it or check its spelling")
        elif e["type"] == "missing":
            lines.append(f"  - {field}: missing")
        else:
            value = e.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            lines.append(f"  - {field}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'al.rounds=3' -> (['al', 'rounds'], 3); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"bad override {text!r}", hint="write overrides as section.option=value, e.g. al.rounds=3")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().lstrip("-").split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted override in a nested dict (unknown keys are caught by validation)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML mapping from `path`, with a clear error naming the file when it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist", hint="pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(data).__name__}")
    return data


def build_config(data: dict[str, Any] | None = None, overrides: list[str] | None = None, source: str = "arguments") -> RunConfig:
    """Validate a nested dict (plus overrides) into a RunConfig, or raise one ConfigError."""
    merged = apply_overrides(copy.deepcopy(dict(data or {})), list(overrides or []))
    try:
        return RunConfig.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source), hint="see the configuration reference in README.md") from None


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Config from an optional YAML file plus dotted overrides, fully validated."""
    data = read_yaml(path) if path is not None else {}
    source = f"{path}" if path is not None else "defaults"
    if overrides:
        source += " + command-line overrides"
    return build_config(data, overrides, source)


# Fields added after runs were first written whose default changed what a run does, with the
# behaviour before them. A stored config (a run's config.yaml, a grid's base_config) that lacks
# one was run that way, so resuming or re-checking it must not switch to the new default.
STORED_LEGACY: dict[tuple[str, str], Any] = {("train", "precision"): "fp32", ("al", "precision"): "fp32",
                                             ("eval", "mode"): "generate", ("al", "score_from_generation"): False,
                                             ("task", "option_style"): "letter"}


def with_stored_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of stored config data with `STORED_LEGACY` filled in where a field is missing."""
    out = copy.deepcopy(data)
    if not isinstance(out, dict):
        return out
    for (section, key), value in STORED_LEGACY.items():
        node = out.get(section)
        if isinstance(node, dict) and key not in node:
            node[key] = value
    return out


def load_stored_config(path: str | os.PathLike[str]) -> RunConfig:
    """The config a run directory recorded, read as it was run (see `STORED_LEGACY`)."""
    return build_config(with_stored_defaults(read_yaml(path)), source=str(path))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML, loadable by `load_config`.

    The `llm_annotator` section is written only when the run uses it or it was set, so the
    config.yaml of other runs stays readable by versions of star that predate it.
    """
    data = config.model_dump(mode="json")
    if config.al.annotator != "llm" and config.llm_annotator == LLMAnnotatorConfig():
        data.pop("llm_annotator")
    return yaml.safe_dump(data, sort_keys=False)


def reference_markdown() -> str:
    """The configuration reference as Markdown tables (README's section is generated from this)."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, _Section):
            continue
        lines.append(f"| `{name}` | `{field.get_default(call_default_factory=True)}` | {field.description or ''} |")
    for name, field in RunConfig.model_fields.items():
        section = field.annotation
        if not (isinstance(section, type) and issubclass(section, _Section)):
            continue
        lines += ["", f"**`{name}`**: {(section.__doc__ or '').strip().splitlines()[0]}", "",
                  "| option | default | meaning |", "|---|---|---|"]
        lines += _option_rows(name, section)
    return "\n".join(lines)


def _option_rows(prefix: str, section: type[_Section]) -> list[str]:
    """One table row per option of `section`; a nested section (e.g. al.stop) gives one row per option of its own."""
    rows = []
    for key, sub in section.model_fields.items():
        if isinstance(sub.annotation, type) and issubclass(sub.annotation, _Section):
            rows += _option_rows(f"{prefix}.{key}", sub.annotation)
            continue
        default = str(sub.get_default(call_default_factory=True)).replace("\n", "\\n")  # one table row
        rows.append(f"| `{prefix}.{key}` | `{default}` | {sub.description or ''} |")
    return rows
