"""What every section shares: the pydantic base (unknown options are errors) and the registries' names that
config checks but cannot import (they live in higher layers)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
#: Names `al.annotator` accepts. The annotators live above this layer (star.annotation.registry);
#: tests/unit/test_config.py pins this tuple to that registry.
ANNOTATOR_NAMES = ("oracle", "human", "llm")
#: Names `tracking.log_with` accepts: accelerate's trackers that star.tracking drives (a test pins the two).
TRACKER_NAMES = ("tensorboard", "mlflow", "wandb")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def comma_list(v: Any) -> Any:
    """A list option's raw value: None is [], a single name or 'a,b' (as typed on the command line) a list of names."""
    if v is None:
        return []
    if isinstance(v, str):
        return [part.strip() for part in v.split(",") if part.strip()]
    return v
