"""Sections for services around the loop: experiment tracking and the LLM annotator."""

from __future__ import annotations

import re
import string
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from star.config.base import DEFAULT_MODEL, TRACKER_NAMES, _Section, comma_list


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
        return comma_list(v)

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
