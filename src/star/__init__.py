"""star: STAR active learning (dynamic uncertainty + constraint LoRA) for data-efficient LLM fine-tuning."""

from star.config import RunConfig, build_config, load_config
from star.errors import (
    ConfigError,
    DataError,
    ModelLoadError,
    PoolExhaustedError,
    RunStateError,
    StarError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "ModelLoadError", "PoolExhaustedError", "RunConfig", "RunStateError",
    "StarError", "build_config", "load_config", "run", "__version__",
]


def run(config: RunConfig | dict | None = None, resume: str | None = None):  # noqa: ANN201
    """Run (or resume) an active-learning experiment; returns the per-round metrics."""
    from star.loop import run as _run

    return _run(config, resume=resume)
