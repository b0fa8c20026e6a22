"""The streaming top-k sink against a brute-force selection over the whole score matrix."""

from __future__ import annotations

import pytest
import torch

from kgtracin.scoring import TopKSink, select_top


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
    indices = torch.arange(num_train).expand(num_test, -1)
    for largest, values, chosen in (
        (True, sink.top_values, sink.top_indices),
        (False, sink.bottom_values, sink.bottom_indices),
    ):
        expected_values, expected_indices = select_top(scores, indices, k, largest)
        assert torch.equal(values, expected_values)
        assert torch.equal(chosen, expected_indices)  # ties go to the smaller training index


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
    whole = TopKSink(4, 5, torch.float64)
    whole.add(0, scores)
    assert torch.equal(merged.top_indices, whole.top_indices)
    assert torch.equal(merged.bottom_indices, whole.bottom_indices)
