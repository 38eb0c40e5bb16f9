"""Helpers for tests on the tiny random model (tests/conftest.py builds it).

Imported as `tiny_helpers` (pytest puts tests/, the folder of conftest.py, on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import torch

from star.config import LoraSettings, ModelConfig
from star.engine.modeling import LoadedModel, load_model


def tuned_tiny_model(folder: Path, seed: int = 7, dropout: float = 0.3) -> LoadedModel:
    """The tiny model with a LoRA adapter (r 2, alpha 4) whose B is non-zero, drawn from `seed`, so the
    adapter (and its dropout) changes the outputs; in eval mode. LoRA's A is drawn from torch's global generator,
    seeded here too, so the model does not depend on which tests ran before."""
    torch.manual_seed(seed)
    loaded = load_model(ModelConfig(name=str(folder), threads=1), LoraSettings(r=2, alpha=4, dropout=dropout))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    loaded.model.eval()
    return loaded


class RenamedTokenizer:
    """A tokenizer with other EOS / pad ids (generation reads only these and decodes)."""

    def __init__(self, tok, eos: int, pad: int) -> None:
        self._tok, self.eos_token_id, self.pad_token_id = tok, eos, pad

    def __getattr__(self, name: str):
        return getattr(self._tok, name)
