"""The streaming top-k sink against plain sorting of the whole score matrix, on fixed hard cases (random ones are
in ``test_properties.py``)."""

from __future__ import annotations

import pytest
import torch

from kgtracin.scoring import TopKSink

from .test_properties import _sorted_choice


@pytest.mark.parametrize("shuffled", [False, True])
@pytest.mark.parametrize("block, k", [(1, 3), (5, 3), (7, 10), (64, 4), (200, 200)])
def test_streamed_top_k_equals_brute_force(block, k, shuffled):
    generator = torch.Generator().manual_seed(block * 31 + k)
    num_test, num_train = 9, 150
    scores = torch.randint(-6, 7, (num_test, num_train), generator=generator).double()  # many ties
    scores[0] = 1.0  # a test triple whose scores all tie
    scores[1] = torch.linspace(-1, 1, num_train)  # an increasing stream: every block improves the top
    sink = TopKSink(num_test, k, torch.float64)
    starts = list(range(0, num_train, block))
    if shuffled:  # blocks in any order give the same selection
        starts = [starts[i] for i in torch.randperm(len(starts), generator=generator)]
    for start in starts:
        sink.add(start, scores[:, start : start + block])  # (M, B) blocks
    for row in range(num_test):
        for largest, values, chosen in (
            (True, sink.top_values, sink.top_indices),
            (False, sink.bottom_values, sink.bottom_indices),
        ):
            expected_values, expected_indices = _sorted_choice(scores[row].tolist(), min(k, num_train), largest)
            assert values[row].tolist() == expected_values
            assert chosen[row].tolist() == expected_indices  # ties go to the smaller training index


def test_merging_shards_in_any_order_is_the_same():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(-3, 4, (4, 90), generator=generator).double()
    parts = []
    for first in (60, 0, 30):  # shards finished out of order
        part = TopKSink(4, 5, torch.float64)
        part.add(first, scores[:, first : first + 30])
        parts.append(part)
    merged = TopKSink(4, 5, torch.float64)
    for part in parts:
        merged.merge(part)
    for row in range(4):
        assert merged.top_indices[row].tolist() == _sorted_choice(scores[row].tolist(), 5, True)[1]
        assert merged.bottom_indices[row].tolist() == _sorted_choice(scores[row].tolist(), 5, False)[1]
