"""Typed, validated run configuration: YAML in and out, dotted command-line overrides.

Every section is a pydantic model with `extra="forbid"`, so an unknown option is an error.
`load_config` collects *every* problem and raises one ConfigError naming each field,
its value and the fix, before any model is loaded.

base (the shared pydantic base, registries' names), sections (model, task, lora, train, eval),
active (al, al.stop, al.cost), services (tracking, llm_annotator), run (RunConfig and the checks
that span sections), files (YAML, overrides, stored configs, the README's reference).
"""

from star.config.active import ActiveLearningConfig, CostConfig, StopConfig
from star.config.base import ANNOTATOR_NAMES, DEFAULT_MODEL, TRACKER_NAMES
from star.config.files import (
    STORED_LEGACY,
    apply_overrides,
    build_config,
    dump_config,
    load_config,
    load_stored_config,
    parse_override,
    read_yaml,
    reference_markdown,
    with_stored_defaults,
)
from star.config.run import RunConfig
from star.config.sections import EvalConfig, LoraSettings, ModelConfig, TaskConfig, TrainConfig, has_options
from star.config.services import DEFAULT_LLM_SYSTEM, LLMAnnotatorConfig, TrackingConfig

__all__ = [
    "ANNOTATOR_NAMES", "DEFAULT_LLM_SYSTEM", "DEFAULT_MODEL", "STORED_LEGACY", "TRACKER_NAMES", "ActiveLearningConfig",
    "CostConfig", "EvalConfig", "LLMAnnotatorConfig", "LoraSettings", "ModelConfig", "RunConfig", "StopConfig",
    "TaskConfig", "TrackingConfig", "TrainConfig", "apply_overrides", "build_config", "dump_config", "has_options",
    "load_config", "load_stored_config", "parse_override", "read_yaml", "reference_markdown", "with_stored_defaults",
]
