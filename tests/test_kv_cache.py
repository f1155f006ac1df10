"""The growing cache layer must hold what transformers' DynamicLayer holds."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from ivg_core.kv_cache import GrowingLayer


def random_states(batch: int, length: int, generator: torch.Generator):
    shape = (batch, 2, length, 4)
    return torch.randn(shape, generator=generator), torch.randn(
        shape, generator=generator
    )


OPERATIONS = [
    pytest.param([("append", 3), ("append", 1), ("append", 1)], id="appends"),
    pytest.param([("append", 5)] + [("append", 1)] * 70, id="past_capacity"),
    pytest.param(
        [("append", 4), ("select", [2, 2, 0]), ("append", 1), ("append", 2)],
        id="select_then_append",
    ),
    pytest.param(
        [("append", 4), ("append", 3), ("crop", 2), ("append", 1)],
        id="crop_then_append",
    ),
    pytest.param(
        [
            ("append", 2),
            ("repeat", 2),
            ("append", 1),
            ("select", [5, 0]),
            ("append", 1),
        ],
        id="repeat_and_select",
    ),
]


@pytest.mark.parametrize("operations", OPERATIONS)
def test_growing_layer_matches_dynamic(operations):
    generator = torch.Generator().manual_seed(0)
    growing, dynamic = GrowingLayer(), DynamicLayer()
    batch = 3

    for operation, argument in operations:
        if operation == "append":
            keys, values = random_states(batch, argument, generator)
            returned = growing.update(keys, values)
            expected = dynamic.update(keys, values)
            assert torch.equal(returned[0], expected[0])
            assert torch.equal(returned[1], expected[1])
        elif operation == "select":
            indices = torch.tensor(argument)
            growing.batch_select_indices(indices)
            dynamic.batch_select_indices(indices)
            batch = len(argument)
        elif operation == "crop":
            growing.crop(-argument)
            dynamic.crop(-argument)
        elif operation == "repeat":
            growing.batch_repeat_interleave(argument)
            dynamic.batch_repeat_interleave(argument)
            batch *= argument

        assert growing.get_seq_length() == dynamic.get_seq_length()
        assert torch.equal(growing.keys, dynamic.keys)
        assert torch.equal(growing.values, dynamic.values)


def test_growing_layer_appends_in_place():
    generator = torch.Generator().manual_seed(1)
    layer = GrowingLayer()
    layer.update(*random_states(2, 3, generator))
    buffer_before = layer._key_buffer.data_ptr()

    for _ in range(20):
        layer.update(*random_states(2, 1, generator))

    assert layer._key_buffer.data_ptr() == buffer_before
    assert layer.keys.data_ptr() == buffer_before
    assert layer.get_seq_length() == 23
