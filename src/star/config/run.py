"""RunConfig: every section of a run, and the checks that span sections."""

from __future__ import annotations

from pydantic import Field, model_validator

from star.al.strategies import get_strategy
from star.al.uncertainty import DISAGREEMENT_RESPONSES
from star.config.active import ActiveLearningConfig
from star.config.base import _Section
from star.config.sections import EvalConfig, LoraSettings, ModelConfig, TaskConfig, TrainConfig, has_options
from star.config.services import LLMAnnotatorConfig, TrackingConfig
from star.errors import PoolExhaustedError


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
    def _check_budget(self) -> RunConfig:
        if self.task.pool_size < self.al.labels_needed:
            raise ValueError(
                f"task.pool_size={self.task.pool_size} is smaller than al.initial + (al.rounds - 1) * al.query"
                f" = {self.al.labels_needed}; raise task.pool_size or lower al.initial / al.query / al.rounds"
            )
        return self

    @model_validator(mode="after")
    def _check_eval_mode(self) -> RunConfig:
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
