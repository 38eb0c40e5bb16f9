"""The model, task, LoRA, training and evaluation sections."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from star.config.base import DEFAULT_MODEL, _Section


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
