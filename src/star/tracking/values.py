"""What the trackers get: the resolved config as flat hyperparameters, a round's metrics as flat scalars."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: metrics.json keys that are not a round's measurements: the step itself, and text.
SKIPPED = frozenset({"round", "machine"})  # the step itself; where it ran (threads, cores) is no curve


def flatten(data: Mapping[str, Any], sep: str, prefix: str = "") -> dict[str, Any]:
    """{"al": {"rounds": 4}} -> {"al.rounds": 4} (with sep "."): nested mappings become dotted keys."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, sep, name))
        else:
            out[name] = value
    return out


def hyperparameters(config: Mapping[str, Any], run_dir: str) -> dict[str, bool | int | float | str]:
    """The resolved config (`RunConfig.model_dump(mode="json")`) as `section.option` keys, plus `run_dir`.

    Every value is a bool, int, float or str, as TensorBoard's hparams and MLflow's params need:
    None becomes "null" and a list its JSON text, as they would be typed in an override.
    """
    params = flatten(config, ".")
    params["run_dir"] = run_dir
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in params.items()}


def round_scalars(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """Every finite number of a round's metrics.json, nested keys joined by "/" (seconds/train, train/final_loss).

    Generic on purpose: accuracy, ECE, labels, lambda, seconds per phase and any numbers a later
    version adds (stopping-rule values, say) are logged; text, lists, None and booleans are not.
    """
    out = {}
    for key, value in flatten({k: v for k, v in metrics.items() if k not in SKIPPED}, "/").items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        out[key] = value
    return out
