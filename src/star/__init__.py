"""star: STAR active learning (dynamic uncertainty + constraint LoRA) for data-efficient LLM fine-tuning.

The Python API: `build_config` / `load_config`, `run`, the `compare` module
(`star.compare.compare`, `star.compare.Arm`, ...), `write_report`, `LabelStore` and the errors. The heavy parts (torch, transformers) are
imported on first use, so `import star` and config validation stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from star.config import RunConfig, build_config, load_config
from star.errors import (
    ConfigError,
    DataError,
    ModelLoadError,
    PoolExhaustedError,
    RunInterrupted,
    RunLockedError,
    RunStateError,
    StarError,
    StorageError,
    StoreBusyError,
)

__version__ = "0.1.0"

#: Public names that live in a higher layer, imported when first used: name -> (module, attribute);
#: attribute None is the module itself (`star.compare` is star.experiments.compare, as before the layers).
_LAZY: dict[str, tuple[str, str | None]] = {
    "compare": ("star.experiments.compare", None),
    "write_report": ("star.experiments.report", "write_report"),
    "LabelStore": ("star.store.labels", "LabelStore"),
}

__all__ = [
    "ConfigError",
    "DataError",
    "LabelStore",
    "ModelLoadError",
    "PoolExhaustedError",
    "RunConfig",
    "RunInterrupted",
    "RunLockedError",
    "RunStateError",
    "StarError",
    "StorageError",
    "StoreBusyError",
    "__version__",
    "build_config",
    "compare",
    "load_config",
    "run",
    "write_report",
]


def run(config: RunConfig | dict | None = None, resume: str | None = None):
    """Run (or resume) an active-learning experiment; returns the per-round metrics."""
    from star.loop import run as _run

    return _run(config, resume=resume)


def __getattr__(name: str) -> Any:
    """`star.compare`, `star.write_report`, ...: the public names of higher layers, loaded on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'star' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
