"""The active-learning section (al) and its sub-sections: stopping rules (al.stop) and annotation cost (al.cost)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from star.al.cost import CostUnit
from star.al.diversity import IDDS_LAMBDA
from star.al.schedules import SCHEDULES, lambda_at
from star.al.stopping import RULES as STOP_RULES
from star.al.strategies import STRATEGIES
from star.config.base import ANNOTATOR_NAMES, _Section, comma_list

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
        return comma_list(v)

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
    idds_lambda: float = Field(IDDS_LAMBDA, ge=0.0, le=1.0, description="idds: weight of a candidate's typicality"
                               " (mean cosine to the other candidates) against its novelty (1 - weight: mean cosine"
                               " to the labelled set); 0.67 as Tsvigun et al. 2022 and ATGen.")
    response: Literal["generated", "gold", "options"] = Field("generated", description="Scored response: the model's greedy answer (label-free), the gold answer (simulation only), or the distribution over a closed task's answer options (label-free).")
    mc_passes: int = Field(3, ge=1, description="K stochastic passes with LoRA dropout on (release K=3).")
    mc_dropout: bool = Field(True, description="Keep LoRA dropout active while scoring the tuned model.")
    mc_dropout_p: float | None = Field(None, ge=0.0, lt=1.0, description="LoRA dropout p of the MC passes while"
                                       " scoring; null: lora.dropout. Training keeps lora.dropout.")
    score_subsample: int | None = Field(32, ge=1, description="Score only a seeded random subsample of the unlabelled pool each round (null: all).")
    batch_size: int = Field(32, ge=1, description="Pool examples per generation / scoring batch (MC passes included).")
    max_new_tokens: int = Field(64, ge=1, description="Greedy tokens generated per pool example (generated response).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="Pool generation and scoring matmuls: fp32, bf16 autocast (~2x faster on a CPU with"
                            " AVX512-BF16 or AMX; greedy answers, hence selections, can change, outcomes did not"
                            " beyond seed noise: docs/results.md), or auto (bf16 where fast).")
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

    @model_validator(mode="after")
    def _cost_aware_strategy(self) -> ActiveLearningConfig:
        """k-center and IDDS pick by distance in embedding space, with no score to divide by a cost."""
        if self.cost.aware and not STRATEGIES[self.strategy].ranks_per_cost:
            raise ValueError(f"al.cost.aware ranks by score per unit of cost, and al.strategy={self.strategy} picks by"
                             " distance between embeddings, with no score to rank; set al.cost.aware=false, or use"
                             " an uncertainty strategy (its +diverse hybrid too, e.g. pe-dynamic+diverse)")
        return self

    @property
    def labels_needed(self) -> int:
        """Labels a whole run acquires: al.initial + (al.rounds - 1) x al.query."""
        return self.initial + (self.rounds - 1) * self.query

    def lambda_at(self, t: int) -> float:
        """lambda(t) of the dynamic mix after model t (0 = the model trained on L0)."""
        return lambda_at(self.schedule, t, self.schedule_horizon or self.rounds, self.schedule_value)
