"""What machine and code a round ran on, recorded in its metrics.json.

bf16 matmuls round differently on AMX, AVX512-BF16 and CUDA, so a run is reproducible bit for bit on
one kind of machine only; a report pairing runs of different sessions shows where they came from
(`star report`'s machine column). The CPU model and the library versions are read once per process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from star.engine.precision import bf16_kind


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows, else 'unknown'."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@functools.cache
def _versions() -> dict[str, str]:
    import peft
    import transformers

    try:
        version = metadata.version("star-al")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"star": version, "star_source": str(Path(__file__).resolve().parents[1]),  # which copy of the code ran
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "python": platform.python_version()}


def machine_record(device: torch.device, world: int = 1) -> dict[str, Any]:
    """The round's machine: CPU (or GPU) model, its bf16 path, threads, processes and library versions."""
    record: dict[str, Any] = {"cpu": cpu_model(), "bf16": bf16_kind(device), "device": str(device),
                              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "world": world}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record | _versions()
