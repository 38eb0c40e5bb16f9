"""KV caches for a decoder, across transformers versions: an empty DynamicCache, and one whose full-attention
layers write into preallocated buffers for decoding.

DynamicCache grows each layer by `torch.cat([keys, new])`, which copies the whole cache at every decoding
step: for 32 rows of ~150 tokens through SmolLM2-135M's 30 layers that was a third of a generation's CPU time
(`torch.profiler`: aten::cat 9.7 s of 27.8 s). `preallocated_cache` keeps each layer's keys and values in a
buffer of the known final length and writes the new positions in place; attention reads a view of the filled
part, the same values in the same order as the concatenated tensors.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer


def new_cache(decoder: nn.Module) -> tuple[str, object]:
    """(keyword the decoder takes its KV cache by, an empty DynamicCache) across transformers versions."""
    from transformers import DynamicCache

    keyword = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    try:
        return keyword, DynamicCache(config=decoder.config)
    except TypeError:  # older transformers: no config argument
        return keyword, DynamicCache()


def preallocated_cache(decoder: nn.Module, capacity: int) -> tuple[str, object]:
    """`new_cache`, with every plain full-attention layer holding room for `capacity` positions (it grows past
    that if it must); sliding-window and other special layers stay as transformers made them."""
    keyword, cache = new_cache(decoder)
    if isinstance(getattr(cache, "layers", None), list):
        cache.layers = [BufferedLayer.replacing(layer, capacity) if type(layer) is DynamicLayer else layer
                        for layer in cache.layers]
    return keyword, cache


class BufferedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views (B, H, n, d) of buffers (B, H, capacity, d) filled in place."""

    capacity: int

    @classmethod
    def replacing(cls, layer: DynamicLayer, capacity: int) -> BufferedLayer:
        """This layer in place of an empty DynamicLayer `layer` (its state taken over), with room for `capacity`."""
        fresh = cls.__new__(cls)
        fresh.__dict__.update(layer.__dict__)
        fresh.capacity, fresh.filled = capacity, 0
        return fresh

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.k_buf = key_states.new_empty((*key_states.shape[:2], self.capacity, key_states.shape[-1]))
            self.v_buf = value_states.new_empty((*value_states.shape[:2], self.capacity, value_states.shape[-1]))
        end = self.filled + key_states.shape[-2]
        if end > self.k_buf.shape[-2]:  # more than planned: room for twice as many
            self.k_buf, self.v_buf = (_grown(b, self.filled, max(end, 2 * b.shape[-2])) for b in (self.k_buf, self.v_buf))
        self.k_buf[:, :, self.filled : end] = key_states
        self.v_buf[:, :, self.filled : end] = value_states
        self.filled = end
        return self._views()

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = self.k_buf[:, :, : self.filled], self.v_buf[:, :, : self.filled]  # (B, H, n, d)
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:  # copies the filled positions only, not the whole room
            self.k_buf, self.v_buf = (_grown(b.repeat_interleave(repeats, dim=0), self.filled, self.k_buf.shape[-2])
                                      for b in self._views())
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self.k_buf, self.v_buf = (_grown(b[indices], self.filled, self.k_buf.shape[-2]) for b in self._views())
            self._views()

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.is_initialized:
            self.filled = self.keys.shape[-2]


def _grown(buffer: torch.Tensor, filled: int, size: int) -> torch.Tensor:
    """A buffer (B, H, size, d) holding `buffer`'s first `filled` positions."""
    out = buffer.new_empty((*buffer.shape[:2], size, buffer.shape[-1]))
    out[:, :, :filled] = buffer[:, :, :filled]
    return out
