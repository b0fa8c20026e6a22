"""Streaming TracIn: training batches x checkpoints -> kernel blocks -> a sink (dense matrix or top-k).

For each checkpoint, loaded once, the test side's gradient factors are computed once. The training
triples are then streamed in batches; per batch the kernel blocks of all checkpoints are summed with their
learning rates *before* anything is selected, so top-k is the top-k of the summed scores. Memory depends on
the batch size and the number of test triples, never on the number of training triples (apart from the
dense result, when one is asked for).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .adapters import ModelAdapter
from .gradients import Features, GradientComputer
from .gradients.directional import directional_derivatives, summed_gradient
from .normalization import Normalization, make_normalization, norms_of

logger = logging.getLogger(__name__)

__all__ = ["Scorer", "DenseSink", "TopKSink", "VectorSink", "SumSink", "select_top", "test_block_size"]


class DenseSink:
    """Writes the full score matrix into ``scores``, shape (M, N) (a view of a larger matrix is fine)."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def add(self, start: int, block: torch.Tensor) -> None:
        """:param block: shape: (M, B), scores of training triples ``start .. start + B``"""
        self.scores[:, start : start + block.shape[1]] = block.cpu()


def select_top(values: torch.Tensor, indices: torch.Tensor, k: int, largest: bool):
    """The k best candidates per row, ties broken by the smaller training index (deterministic).

    :param values: shape: (M, C)
    :param indices: shape: (M, C), dtype: long
    :return: values (M, min(k, C)) and indices (M, min(k, C)), best first
    """
    order = torch.argsort(indices, dim=1, stable=True)
    values, indices = torch.gather(values, 1, order), torch.gather(indices, 1, order)
    order = torch.argsort(values, dim=1, descending=largest, stable=True)[:, :k]
    return torch.gather(values, 1, order), torch.gather(indices, 1, order)


def _block_top(
    values: torch.Tensor, k: int, largest: bool, held: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best entries of each row, with ties at the k-th place going to the smaller column, exactly as
    :func:`select_top` chooses them, at the cost of ``torch.topk``.

    The k-th place is tied exactly where the (k+1)-th best equals the k-th; only those rows are redone, and
    not those whose tied value cannot beat ``held``.

    :param values: shape: (m, C), contiguous
    :param held: shape: (m,), the k-th best score already held from *smaller* training indices, if any: an
        equal score from this block loses to it, so a tie at that value needs no exact choice
    :return: values and column indices, shape (m, min(k, C))
    """
    k = min(k, values.shape[1])
    v, i = torch.topk(values, min(k + 1, values.shape[1]), dim=1, largest=largest, sorted=True)
    if v.shape[1] == k:  # every column is chosen
        return v, i
    tied = v[:, k] == v[:, k - 1]
    if held is not None:
        tied &= (v[:, k - 1] > held) if largest else (v[:, k - 1] < held)
    tied = tied.nonzero().squeeze(1)
    v, i = v[:, :k].contiguous(), i[:, :k].contiguous()
    if tied.numel():  # topk chose among the entries equal to the k-th arbitrarily: take the smallest columns
        rows = values[tied]
        kth = v[tied, k - 1 :]
        better = rows > kth if largest else rows < kth
        equal = rows == kth
        equal &= torch.cumsum(equal, dim=1) <= k - better.sum(dim=1, keepdim=True)
        columns = (better | equal).nonzero(as_tuple=True)[1].view(tied.numel(), k)  # exactly k per row
        v[tied], i[tied] = torch.gather(rows, 1, columns), columns
    return v, i


class TopKSink:
    """Keeps the running top-k (largest: proponents) and bottom-k (smallest: opponents) per test triple.

    Each (M, B) block is reduced to its own top-k and bottom-k at once (``torch.topk`` along contiguous
    rows); those candidates are merged in bulk. Ties go to the smaller training index, always: merging is
    deterministic and order-independent, so partial sinks from shards, processes or an interrupted run merge
    to the same result.
    """

    def __init__(self, num_test: int, k: int, dtype: torch.dtype, pending_blocks: int = 8):
        self.k = k
        self._top = (torch.empty(num_test, 0, dtype=dtype), torch.empty(num_test, 0, dtype=torch.long))
        self._bottom = (torch.empty(num_test, 0, dtype=dtype), torch.empty(num_test, 0, dtype=torch.long))
        self._pending: dict[bool, list[tuple[torch.Tensor, torch.Tensor]]] = {True: [], False: []}
        self._pending_blocks = pending_blocks
        self._next = 0  # the training index after the last block, while blocks come in training order

    def add(self, start: int, block: torch.Tensor) -> None:
        """:param block: shape: (M, B), scores of training triples ``start .. start + B``"""
        block = block.to("cpu", self._top[0].dtype).contiguous()
        in_order = start >= self._next
        self._next = start + block.shape[1] if in_order else float("inf")
        for largest in (True, False):
            held = self._top if largest else self._bottom
            kth = held[0][:, -1] if in_order and held[0].shape[1] == self.k else None
            v, i = _block_top(block, self.k, largest, kth) if kth is None else self._held_top(block, kth, largest)
            self._pending[largest].append((v, i + start))
        if len(self._pending[True]) >= self._pending_blocks or self._top[0].shape[1] < self.k:
            self._flush()  # at once while fewer than k are held: the held k-th spares later ties

    def _held_top(self, block: torch.Tensor, kth: torch.Tensor, largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`_block_top` for a block that comes after the k held entries of every row: only rows whose best
        entry beats their held k-th (a tie loses to the held, smaller index) are selected; the others get
        filler entries (-inf for the top, +inf for the bottom) that no merge with k finite held entries takes.
        """
        extreme = block.amax(dim=1) if largest else block.amin(dim=1)
        active = ((extreme > kth) if largest else (extreme < kth)).nonzero().squeeze(1)
        if active.numel() == block.shape[0]:
            return _block_top(block, self.k, largest, kth)
        k = min(self.k, block.shape[1])
        values = block.new_full((block.shape[0], k), float("-inf") if largest else float("inf"))
        indices = torch.zeros(block.shape[0], k, dtype=torch.long)
        if active.numel():
            values[active], indices[active] = _block_top(block[active], self.k, largest, kth[active])
        return values, indices

    def _flush(self) -> None:
        for largest, pending in self._pending.items():
            if pending:
                self._merge(torch.cat([v for v, _ in pending], 1), torch.cat([i for _, i in pending], 1), largest)
                pending.clear()

    def _merge(self, values: torch.Tensor, indices: torch.Tensor, largest: bool) -> None:
        current = self._top if largest else self._bottom
        merged = select_top(
            torch.cat([current[0], values.to(current[0].dtype)], 1),
            torch.cat([current[1], indices], 1),
            self.k,
            largest,
        )
        if largest:
            self._top = merged
        else:
            self._bottom = merged

    @property
    def top_values(self) -> torch.Tensor:
        self._flush()
        return self._top[0]

    @property
    def top_indices(self) -> torch.Tensor:
        self._flush()
        return self._top[1]

    @property
    def bottom_values(self) -> torch.Tensor:
        self._flush()
        return self._bottom[0]

    @property
    def bottom_indices(self) -> torch.Tensor:
        self._flush()
        return self._bottom[1]

    def merge(self, other: TopKSink) -> None:
        """Fold another sink over the same test triples into this one."""
        self._merge(other.top_values, other.top_indices, True)
        self._merge(other.bottom_values, other.bottom_indices, False)

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "top_values": self.top_values,
            "top_indices": self.top_indices,
            "bottom_values": self.bottom_values,
            "bottom_indices": self.bottom_indices,
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], k: int) -> TopKSink:
        sink = cls(state["top_values"].shape[0], k, state["top_values"].dtype)
        sink._top = (state["top_values"], state["top_indices"])
        sink._bottom = (state["bottom_values"], state["bottom_indices"])
        return sink


class SumSink:
    """Adds each training triple's influence summed over the test triples: ``sum_j TracIn(z_i -> z'_j)``.

    TracIn is linear in the test gradient, so this is the influence on the summed test loss.
    """

    def __init__(self, num_train: int, dtype: torch.dtype):
        self.values = torch.zeros(num_train, dtype=dtype)

    def add(self, start: int, block: torch.Tensor) -> None:
        """:param block: shape: (M, B)"""
        self.values[start : start + block.shape[1]] += block.sum(dim=0).cpu().to(self.values.dtype)


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
    #: None, "train" or "cosine" (:mod:`kgtracin.normalization`), or the normalisation itself
    normalize: str | Normalization | None = None
    #: checkpoint index -> shape (N,), the clamped gradient norm of every training triple: filled by
    #: :meth:`run_self`, read by :meth:`run_summed` (a dict shared by every scorer of the same training triples)
    train_norms: dict[int, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.normalization = make_normalization(self.normalize)

    def _batches(self, triples: torch.Tensor, desc: str) -> Iterator[tuple[int, torch.Tensor]]:
        n = triples.shape[0]
        starts = range(0, n, self.batch_size)
        bar = tqdm(
            starts,
            desc=desc,
            unit="batch",
            disable=not self.progress or len(starts) < 2,
            total=math.ceil(n / self.batch_size),
            leave=False,
        )
        for start in bar:
            yield start, triples[start : start + self.batch_size]

    def _featurize_all(self, adapter: ModelAdapter, triples: torch.Tensor) -> Features:
        parts = [self.computer.featurize(adapter, batch) for _, batch in self._batches(triples, "test gradients")]
        return Features.cat(parts)

    def prepare(self, test: torch.Tensor) -> list[Features]:
        """The test side's gradient factors, once per checkpoint.

        :param test: shape: (M, 3), dtype: long, dataset ids
        """
        with torch.no_grad():
            tests = [self._featurize_all(adapter, test) for adapter in self.adapters]
            self.normalization.prepare_tests(tests)
            return tests

    def run_range(
        self, train: torch.Tensor, tests: list[Features], sink, offset: int = 0, desc: str = "TracIn"
    ) -> None:
        """Feed ``sum_c lr_c <g_c(train_i), g_c(test_j)>`` to ``sink`` block by block, as (M, B) blocks.

        :param train: shape: (n, 3), dtype: long; training triples ``offset .. offset + n``
        :param tests: from :meth:`prepare`
        """
        with torch.no_grad():
            for start, batch in self._batches(train, desc):
                block = None
                for adapter, lr, test_features in zip(self.adapters, self.learning_rates, tests):
                    features = self.computer.featurize(adapter, batch)
                    part = features.kernel(test_features, transposed=True).mul_(lr)  # (M, B)
                    part = self.normalization.pair(part, features, test_features)
                    block = part if block is None else block + part
                sink.add(offset + start, block)

    def run_pairs(
        self, train: torch.Tensor, test: torch.Tensor, train_index: torch.Tensor, test_index: torch.Tensor
    ) -> torch.Tensor:
        """``sum_c lr_c <g_c(train_i), g_c(test_j)>`` (normalised) of the pairs ``(i_p, j_p)`` only.

        Checkpoint by checkpoint: the test side's factors of one checkpoint are held at a time, every training
        triple is differentiated once per checkpoint, and only the pairs' inner products are formed (never a
        test x batch block), so the cost is that of the gradients, not of ``M x n`` kernels.

        :param train: shape: (n, 3), dtype: long, dataset ids
        :param test: shape: (M, 3), dtype: long, dataset ids
        :param train_index: shape: (P,), dtype: long, on the CPU, rows of ``train``, sorted ascending; the pairs
            are distinct
        :param test_index: shape: (P,), dtype: long, rows of ``test``
        :return: shape: (P,), in the kernels' dtype
        """
        total = None
        with torch.no_grad():
            for c, (adapter, lr) in enumerate(zip(self.adapters, self.learning_rates)):
                tests = self._featurize_all(adapter, test)
                self.normalization.prepare_tests([tests])
                values = None
                desc = f"pairs (checkpoint {c + 1}/{len(self.adapters)})"
                for start, batch in self._batches(train, desc):
                    lo, hi = torch.searchsorted(train_index, torch.tensor([start, start + batch.shape[0]])).tolist()
                    if lo == hi:
                        continue
                    features = self.computer.featurize(adapter, batch)
                    for a in range(lo, hi, _PAIR_CHUNK):
                        part = slice(a, min(hi, a + _PAIR_CHUNK))
                        i = (train_index[part] - start).to(adapter.device)
                        j = test_index[part].to(adapter.device)
                        got = features.pair_kernel(tests, i, j).mul_(lr)
                        got = self.normalization.pair_values(got, features, tests, i, j)
                        if values is None:
                            values = got.new_zeros(train_index.shape[0])
                        values[part] = got
                if values is not None:
                    total = values if total is None else total.add_(values.to(total.dtype))
        return torch.zeros(train_index.shape[0]) if total is None else total

    def run(self, train: torch.Tensor, test: torch.Tensor, sink) -> None:
        """All training triples against all test triples.

        :param train: shape: (N, 3), dtype: long, dataset ids
        :param test: shape: (M, 3), dtype: long, dataset ids
        """
        self.run_range(train, self.prepare(test), sink)

    def run_summed(self, train: torch.Tensor, test: torch.Tensor, sink: VectorSink) -> None:
        """Feed ``sum_j sum_c lr_c <g_c(train_i), g_c(test_j)>`` (normalised) to ``sink``, one value per training
        triple, without any (test x batch) kernel.

        At each checkpoint the test gradients are summed into one vector ``G_c`` (each scaled by ``1 / |g|``
        under ``cosine``), and each training batch gets ``<g_c(train_i), G_c>`` as one Jacobian-vector product
        (:mod:`kgtracin.gradients.directional`). The cost is about that of a few passes over the training
        triples per checkpoint, whatever the number of test triples; memory holds one copy of the selected
        parameters. Training-side norms (``train``, ``cosine``) come from a finished :meth:`run_self` over the
        same triples when :attr:`train_norms` holds them, else from the gradient computer.

        :param train: shape: (N, 3), dtype: long, dataset ids
        :param test: shape: (M, 3), dtype: long, dataset ids
        """
        total = None
        norm = self.normalization
        for c, (adapter, lr) in enumerate(zip(self.adapters, self.learning_rates)):
            where = f"(checkpoint {c + 1}/{len(self.adapters)})"
            summed = summed_gradient(adapter, self._weighted(adapter, test, f"summed test gradient {where}"))
            values = torch.empty(train.shape[0], dtype=sink.values.dtype)  # the results' dtype, not bf16's
            known = None if self.train_norms is None else self.train_norms.get(c)
            for start, batch in self._batches(train, f"summed influence {where}"):
                part = directional_derivatives(adapter, batch, summed).mul_(lr)
                if norm.train_norms:
                    if known is not None:  # from a self-influence pass over the same triples
                        norms = known[start : start + batch.shape[0]].to(part)
                    else:
                        with torch.no_grad():
                            norms = norms_of(self.computer.featurize(adapter, batch))
                    part = norm.summed_values(part, norms)
                values[start : start + batch.shape[0]] = part.cpu()
            total = values if total is None else total.add_(values)
        sink.add(0, total)

    def _weighted(self, adapter: ModelAdapter, test: torch.Tensor, desc: str):
        """Test batches with their weights in the summed gradient: ``1 / |g|`` under ``cosine``, else ``None``."""
        for _, batch in self._batches(test, desc):
            weights = None
            if self.normalization.test_norms:
                with torch.no_grad():
                    weights = 1.0 / norms_of(self.computer.featurize(adapter, batch))
            yield batch, weights

    def run_self(self, train: torch.Tensor, sink: VectorSink) -> None:
        """Feed ``sum_c lr_c |g_c(train_i)|^2`` to ``sink`` block by block."""
        found: dict[int, torch.Tensor] = {}  # kept only once every batch is done: never a half-filled norm
        with torch.no_grad():
            for start, batch in self._batches(train, "self-influence"):
                block = None
                for c, (adapter, lr) in enumerate(zip(self.adapters, self.learning_rates)):
                    features = self.computer.featurize(adapter, batch)
                    norms = found.setdefault(c, torch.empty(train.shape[0], dtype=torch.float64))
                    norms[start : start + batch.shape[0]] = norms_of(features).cpu()
                    part = self.normalization.self_term(features.self_kernel() * lr, lr)
                    block = part if block is None else block + part
                sink.add(start, block)
        if self.train_norms is not None:
            self.train_norms.update(found)


#: test triples featurised to measure the automatic test block
_PROBE = 32
#: pairs whose factors :meth:`Scorer.run_pairs` gathers at once
_PAIR_CHUNK = 256


def test_block_size(
    scorer: Scorer, test: torch.Tensor, configured: int | None, budget: int, dtype: torch.dtype, pairs: bool = False
) -> int:
    """The configured test block size, or as many test triples as fit in ``budget`` bytes: the test factors of
    every checkpoint (twice: once batched, once concatenated) and four (test x batch) kernel blocks; with
    ``pairs`` (:meth:`Scorer.run_pairs`), the test factors of one checkpoint, twice, and no kernel block.

    :param test: shape: (M, 3), dataset ids; the first few are featurised to measure a test triple's factors
    :param dtype: the dtype of the kernel blocks' numbers
    :return: a block size from 1 to M
    """
    if configured is not None:
        return configured
    if test.shape[0] <= _PROBE:
        return max(1, test.shape[0])
    size = min(_PROBE, scorer.batch_size)  # never more than a training batch holds (vmap, loop)
    with torch.no_grad():
        probe = scorer.computer.featurize(scorer.adapters[0], test[:size])
    if pairs:
        per_triple = 2 * probe.nbytes / size
    else:
        per_triple = 2 * len(scorer.adapters) * probe.nbytes / size + 4 * scorer.batch_size * dtype.itemsize
    block = max(1, min(test.shape[0], int(budget // per_triple)))
    if block < test.shape[0]:
        logger.info(
            "test triples in blocks of %d (%.1f KB of factors each): one training pass per block",
            block,
            per_triple / 1024,
        )
    return block
