"""A KV cache whose full-attention layers grow in place instead of by copying.

transformers' ``DynamicLayer`` appends each step's keys and values with
``torch.cat``, which copies the whole layer: over n steps that moves O(n²)
bytes. ``GrowingLayer`` writes into a buffer with spare capacity and doubles
it when full, so appending costs the new tokens only (amortised).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedConfig
from transformers.cache_utils import DynamicLayer

__all__ = ["GrowingLayer", "growing_cache"]

MIN_CAPACITY = 64


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` that appends into a buffer with spare capacity.

    ``keys`` and ``values`` are views of the first ``length`` positions of the
    buffers. Row selection keeps the spare capacity. Repetition, inherited
    from ``DynamicLayer``, leaves the buffers behind, and the next append then
    starts new ones.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        new_length = length + key_states.shape[-2]
        if not self._appends_in_place(key_states, new_length):
            self._grow(key_states, value_states, new_length)
        self._key_buffer[..., length:new_length, :] = key_states
        self._value_buffer[..., length:new_length, :] = value_states
        self.keys = self._key_buffer[..., :new_length, :]
        self.values = self._value_buffer[..., :new_length, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self._appends_in_place(self.keys, self.get_seq_length()):
            super().batch_select_indices(indices)
            return
        length = self.get_seq_length()
        self._key_buffer = self._key_buffer.index_select(0, indices)
        self._value_buffer = self._value_buffer.index_select(0, indices)
        self.keys = self._key_buffer[..., :length, :]
        self.values = self._value_buffer[..., :length, :]

    def _appends_in_place(self, key_states: torch.Tensor, new_length: int) -> bool:
        """Return whether ``keys`` still views the buffer and the buffer has room."""
        buffer = self._key_buffer
        return (
            buffer is not None
            and self.keys.numel() > 0
            and self.keys.data_ptr() == buffer.data_ptr()
            and self.keys.shape[0] == buffer.shape[0]
            and new_length <= buffer.shape[-2]
        )

    def _grow(
        self, key_states: torch.Tensor, value_states: torch.Tensor, new_length: int
    ) -> None:
        capacity = max(MIN_CAPACITY, 2 * new_length)
        length = self.get_seq_length()
        for name, states in (
            ("_key_buffer", key_states),
            ("_value_buffer", value_states),
        ):
            batch, heads, _, dim = states.shape
            buffer = states.new_empty((batch, heads, capacity, dim))
            old = self.keys if name == "_key_buffer" else self.values
            if length:
                buffer[..., :length, :] = old
            setattr(self, name, buffer)

    def reset(self) -> None:
        super().reset()
        self._key_buffer = self._value_buffer = None


def growing_cache(config: PreTrainedConfig) -> DynamicCache:
    """Return a ``DynamicCache`` for a model whose full-attention layers grow in place.

    Sliding-window layers stay as transformers builds them.
    """
    cache = DynamicCache(config=config)
    cache.layers = [
        GrowingLayer() if type(layer) is DynamicLayer else layer
        for layer in cache.layers
    ]
    return cache
