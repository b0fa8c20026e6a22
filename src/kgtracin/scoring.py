"""Streaming TracIn: training batches x checkpoints -> kernel blocks -> a sink (dense matrix or top-k).

For each checkpoint, loaded once, the test side's gradient factors are computed once. The training
triples are then streamed in batches; per batch the kernel blocks of all checkpoints are summed with their
learning rates *before* anything is selected, so top-k is the top-k of the summed scores. Memory depends on
the batch size and the number of test triples, never on the number of training triples (apart from the
dense result, when one is asked for).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .adapters import ModelAdapter
from .gradients import Features, GradientComputer

__all__ = ["Scorer", "DenseSink", "TopKSink", "VectorSink"]


class DenseSink:
    """Collects the full ``(M, N)`` score matrix."""

    def __init__(self, num_test: int, num_train: int, dtype: torch.dtype):
        self.scores = torch.zeros(num_test, num_train, dtype=dtype)

    def add(self, start: int, block: torch.Tensor) -> None:
        """:param block: shape: (B, M), scores of training triples ``start .. start + B``"""
        self.scores[:, start : start + block.shape[0]] = block.T.cpu()


class TopKSink:
    """Keeps the running top-k (largest: proponents) and bottom-k (smallest: opponents) per test triple."""

    def __init__(self, num_test: int, k: int, dtype: torch.dtype):
        self.k = k
        self.top_values = torch.empty(num_test, 0, dtype=dtype)
        self.top_indices = torch.empty(num_test, 0, dtype=torch.long)
        self.bottom_values = torch.empty(num_test, 0, dtype=dtype)
        self.bottom_indices = torch.empty(num_test, 0, dtype=torch.long)

    @staticmethod
    def _merge(values, indices, block, start, k, largest):
        k_block = min(k, block.shape[1])
        v, i = torch.topk(block, k_block, dim=1, largest=largest, sorted=False)
        values = torch.cat([values, v], dim=1)
        indices = torch.cat([indices, i + start], dim=1)
        kk = min(k, values.shape[1])
        v, order = torch.topk(values, kk, dim=1, largest=largest, sorted=True)
        return v, torch.gather(indices, 1, order)

    def add(self, start: int, block: torch.Tensor) -> None:
        block = block.T.cpu()  # (M, B)
        self.top_values, self.top_indices = self._merge(
            self.top_values, self.top_indices, block, start, self.k, True)
        self.bottom_values, self.bottom_indices = self._merge(
            self.bottom_values, self.bottom_indices, block, start, self.k, False)


class VectorSink:
    """Collects one number per training triple (self-influence)."""

    def __init__(self, num_train: int, dtype: torch.dtype):
        self.values = torch.zeros(num_train, dtype=dtype)

    def add(self, start: int, block: torch.Tensor) -> None:
        """:param block: shape: (B,)"""
        self.values[start : start + block.shape[0]] = block.cpu()


@dataclass
class Scorer:
    """Composes checkpoints (as adapters with learning rates), a gradient computer and batching."""

    adapters: Sequence[ModelAdapter]
    learning_rates: Sequence[float]
    computer: GradientComputer
    batch_size: int
    progress: bool = True

    def _batches(self, triples: torch.Tensor, desc: str) -> Iterator[tuple[int, torch.Tensor]]:
        n = triples.shape[0]
        starts = range(0, n, self.batch_size)
        bar = tqdm(starts, desc=desc, unit="batch", disable=not self.progress or len(starts) < 2,
                   total=math.ceil(n / self.batch_size), leave=False)
        for start in bar:
            yield start, triples[start : start + self.batch_size]

    def _featurize_all(self, adapter: ModelAdapter, triples: torch.Tensor) -> Features:
        parts = [self.computer.featurize(adapter, batch) for _, batch in self._batches(triples, "test gradients")]
        return Features.cat(parts)

    def run(self, train: torch.Tensor, test: torch.Tensor, sink) -> None:
        """Feed ``sum_c lr_c <g_c(train_i), g_c(test_j)>`` to ``sink`` block by block.

        :param train: shape: (N, 3), dtype: long, dataset ids
        :param test: shape: (M, 3), dtype: long, dataset ids
        """
        with torch.no_grad():
            tests = [self._featurize_all(adapter, test) for adapter in self.adapters]
            for start, batch in self._batches(train, "TracIn"):
                block = None
                for adapter, lr, test_features in zip(self.adapters, self.learning_rates, tests):
                    part = self.computer.featurize(adapter, batch).kernel(test_features) * lr
                    block = part if block is None else block + part
                sink.add(start, block)

    def run_self(self, train: torch.Tensor, sink: VectorSink) -> None:
        """Feed ``sum_c lr_c |g_c(train_i)|^2`` to ``sink`` block by block."""
        with torch.no_grad():
            for start, batch in self._batches(train, "self-influence"):
                block = None
                for adapter, lr in zip(self.adapters, self.learning_rates):
                    part = self.computer.featurize(adapter, batch).self_kernel() * lr
                    block = part if block is None else block + part
                sink.add(start, block)
