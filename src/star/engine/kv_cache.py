"""An empty KV cache for a decoder, across transformers versions."""

from __future__ import annotations

import inspect

from torch import nn


def new_cache(decoder: nn.Module) -> tuple[str, object]:
    """(keyword the decoder takes its KV cache by, an empty DynamicCache) across transformers versions."""
    from transformers import DynamicCache

    keyword = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    try:
        return keyword, DynamicCache(config=decoder.config)
    except TypeError:  # older transformers: no config argument
        return keyword, DynamicCache()
