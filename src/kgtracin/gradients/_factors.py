"""Per-triple gradient factors and the exact inner products (kernels) between them.

A :class:`Features` object describes the per-triple gradients of a batch of ``B`` triples, split into
parameter groups. ``train.kernel(test)`` gives the ``(B, M)`` matrix of inner products
``<grad l(z_i), grad l(z'_j)>`` summed over the groups; ``self_kernel()`` gives ``|grad l(z_i)|^2``.
The groups never hold a per-triple gradient of a large parameter: embedding tables are kept as a few row
gradients, linear layers as the outer-product factors ``(x, delta)`` (see ``shared/TRACIN_MATH.md``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

__all__ = ["Group", "DenseGroup", "RowGroup", "OuterGroup", "Features"]


def _pow2(counts: torch.Tensor) -> torch.Tensor:
    """Each count rounded up to a power of two (the padded width of its bucket in the row kernel)."""
    return torch.pow(2, torch.ceil(torch.log2(counts.double()))).long()


#: Tile sizes tried by the row kernel's tile strategy: training slots (sorted by row) that meet the test range
#: they span in one matrix product. The cheapest by estimate is taken.
_ROW_TILES = (32, 128, 512)
#: The most (training slot x test slot) products one tile may hold, beyond the smallest tile size.
_TILE_LIMIT = 1 << 22
#: Rough costs on a CPU, in seconds, for choosing the row kernel's strategy (both are exact).
_COST_PER_PRODUCT, _COST_PER_TILE, _COST_PER_BUCKET = 1e-10, 6e-5, 2e-4


def _tiles(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The test range spanned by each run of ``size`` sorted training slots.

    :param lo: shape: (n,), each training slot's first test slot of the same row; ``hi``: one past its last
    :return: each tile's range start and stop, the total and the largest number of products of a tile
    """
    tile_lo, tile_hi = lo[::size], hi[size - 1 :: size]
    if tile_hi.numel() < tile_lo.numel():
        tile_hi = torch.cat([tile_hi, hi[-1:]])
    tile_len = torch.full_like(tile_lo, size)
    tile_len[-1] = lo.shape[0] - size * (tile_lo.numel() - 1)
    products = tile_len * (tile_hi - tile_lo)
    return tile_lo, tile_hi, int(products.sum()), int(products.max())


def _tile_products(flat, sides, strides, size: int, starts: list[int], stops: list[int]) -> None:
    """Row kernel by tiles of ``size`` training slots; see :meth:`RowGroup.add_kernel`."""
    (rows, triple, grads), (test_rows, test_triple, test_grads) = sides
    train_stride, test_stride = strides
    for first, a, b in zip(range(0, rows.shape[0], size), starts, stops):
        last = min(rows.shape[0], first + size)
        products = grads[first:last] @ test_grads[a:b].T  # (tile, range)
        products.mul_(rows[first:last, None] == test_rows[None, a:b])  # only slots of the same row
        target = triple[first:last, None] * train_stride + test_triple[None, a:b] * test_stride
        flat.index_add_(0, target.view(-1), products.view(-1))


def _bucket_products(flat, sides, strides, blocks, a_width, t_width, bucket, keys: list[int]) -> None:
    """Row kernel by buckets of rows; see :meth:`RowGroup.add_kernel`."""
    (rows, triple, grads), (test_rows, test_triple, test_grads) = sides
    train_stride, test_stride = strides
    a_first, a_count, t_first, t_count = blocks
    for key in keys:
        chosen = (bucket == key).nonzero().squeeze(1)
        a, t = int(a_width[chosen[0]]), int(t_width[chosen[0]])
        a_index = (a_first[chosen, None] + torch.arange(a)).clamp(max=rows.shape[0] - 1)  # (n, a)
        t_index = (t_first[chosen, None] + torch.arange(t)).clamp(max=test_rows.shape[0] - 1)  # (n, t)
        valid = (torch.arange(a) < a_count[chosen, None])[:, :, None] & (torch.arange(t) < t_count[chosen, None])[
            :, None, :
        ]
        products = torch.bmm(grads[a_index], test_grads[t_index].transpose(1, 2))  # (n, a, t)
        target = triple[a_index][:, :, None] * train_stride + test_triple[t_index][:, None, :] * test_stride
        flat.index_add_(0, target[valid], products[valid])


class Group(ABC):
    """One parameter group's per-triple gradients for a batch of ``B`` triples."""

    @property
    @abstractmethod
    def size(self) -> int:
        """The number of triples ``B``."""

    @abstractmethod
    def kernel(self, other: Group) -> torch.Tensor:
        """Inner products with another batch's gradients of the same group.

        :return: shape: (B, M), where M is ``other.size``
        """

    def add_kernel(self, other: Group, out: torch.Tensor, transposed: bool = False) -> None:
        """``out += self.kernel(other)`` (or its transpose), in place; groups override it to skip the temporary
        block.

        :param out: shape: (B, M), or (M, B) when ``transposed``; contiguous
        """
        out += self.kernel(other).T if transposed else self.kernel(other)

    @abstractmethod
    def self_kernel(self) -> torch.Tensor:
        """Squared norms of each triple's gradient. :return: shape: (B,)"""

    @classmethod
    @abstractmethod
    def cat(cls, groups: list[Group]) -> Group:
        """Concatenate groups along the triple dimension."""


@dataclass
class DenseGroup(Group):
    """Materialised per-triple gradients of small parameters.

    :param grads: shape: (B, P)
    """

    grads: torch.Tensor

    @property
    def size(self) -> int:
        return self.grads.shape[0]

    def kernel(self, other: DenseGroup) -> torch.Tensor:
        return self.grads @ other.grads.T

    def add_kernel(self, other: DenseGroup, out: torch.Tensor, transposed: bool = False) -> None:
        if transposed:
            out.addmm_(other.grads, self.grads.T)
        else:
            out.addmm_(self.grads, other.grads.T)

    def self_kernel(self) -> torch.Tensor:
        return (self.grads * self.grads).sum(dim=1)

    @classmethod
    def cat(cls, groups: list[DenseGroup]) -> DenseGroup:
        return cls(torch.cat([g.grads for g in groups], dim=0))


@dataclass
class RowGroup(Group):
    """Gradients of an embedding table, which a triple touches only in a few rows (slots).

    ``<grad_E l(z), grad_E l(z')> = sum_{a, b} [idx_a(z) == idx_b(z')] <g_a(z), g_b(z')>``.

    :param index: shape: (B, S), dtype: long; the table row of each slot (e.g. S=2 for head and tail)
    :param grads: shape: (B, S, D); the gradient of the loss with respect to that slot's row
    """

    index: torch.Tensor
    grads: torch.Tensor
    _sorted: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self.index.shape[0]

    def _sorted_entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The flattened slots sorted by row: (rows (E,), triple (E,), grads (E, D)). Cached."""
        if self._sorted is None:
            rows, triple, order = self._sorted_index()
            self._sorted = (rows, triple, self.grads.reshape(rows.shape[0], -1)[order])
        return self._sorted

    def _sorted_index(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The flattened slots' rows sorted, their triples, and the sorting order (into the flattened slots)."""
        rows, order = torch.sort(self.index.reshape(-1), stable=True)
        return rows, torch.div(order, self.index.shape[1], rounding_mode="floor"), order

    def kernel(self, other: RowGroup) -> torch.Tensor:
        out = self.grads.new_zeros(self.size, other.size)
        self.add_kernel(other, out)
        return out

    def add_kernel(self, other: RowGroup, out: torch.Tensor, transposed: bool = False) -> None:
        """Grouped by row, with both sides sorted by row: the training slots of a row meet the test slots of
        the same row in matrix products, and no per-pair gradient is ever gathered. Two exact strategies, the
        cheaper by an estimate of their wasted products and operation count is taken:

        * **tiles**: runs of consecutive training slots (32, 128 or 512, whichever the estimate prefers) meet
          the contiguous range of test slots their rows span, masked to equal rows (few operations; wasted
          products where a run spans rows);
        * **buckets**: every row's ``(a, t)`` block of training by test slots, rows bucketed by (a, t) rounded
          up to powers of two, one padded batched product per bucket (products near the pairs; more operations).
        """
        test_rows, test_triple, test_grads = other._sorted_entries()
        rows, triple, order = self._sorted_index()
        lo = torch.searchsorted(test_rows, rows, side="left")
        hi = torch.searchsorted(test_rows, rows, side="right")
        keep = (hi > lo).nonzero().squeeze(1)
        if keep.numel() == 0:
            return
        rows, triple, lo, hi = rows[keep], triple[keep], lo[keep], hi[keep]
        grads = self.grads.reshape(-1, self.grads.shape[-1])[order[keep]]  # only the slots that meet a test row
        # flat position of (train triple i, test triple j): i * M + j, or j * B + i when transposed
        strides = (1, self.size) if transposed else (other.size, 1)
        sides = (rows, triple, grads), (test_rows, test_triple, test_grads)
        dim = grads.shape[1]
        # the tiles' ranges and the rows' blocks, to estimate both strategies
        tile_cost, tile = float("inf"), None
        for i, size in enumerate(_ROW_TILES):
            tile_lo, tile_hi, products, largest = _tiles(lo, hi, size)
            if i and largest > _TILE_LIMIT:
                break
            cost = products * dim * _COST_PER_PRODUCT + tile_lo.numel() * _COST_PER_TILE
            if cost < tile_cost:
                tile_cost, tile = cost, (size, tile_lo.tolist(), tile_hi.tolist())
        _, a_count = torch.unique_consecutive(rows, return_counts=True)
        a_first = torch.cumsum(a_count, 0) - a_count
        blocks = a_first, a_count, lo[a_first], (hi - lo)[a_first]
        a_width, t_width = _pow2(a_count), _pow2(blocks[3])
        bucket = a_width * (int(t_width.max()) + 1) + t_width
        buckets = torch.unique(bucket)
        bucket_cost = float((a_width * t_width).sum()) * dim * _COST_PER_PRODUCT + buckets.numel() * _COST_PER_BUCKET
        flat = out.view(-1)
        if tile_cost <= bucket_cost:
            _tile_products(flat, sides, strides, *tile)
        else:
            _bucket_products(flat, sides, strides, blocks, a_width, t_width, bucket, buckets.tolist())

    def self_kernel(self) -> torch.Tensor:
        gram = self.grads @ self.grads.transpose(1, 2)  # (B, S, S)
        same = self.index.unsqueeze(2) == self.index.unsqueeze(1)
        return (gram * same).sum(dim=(1, 2))

    @classmethod
    def cat(cls, groups: list[RowGroup]) -> RowGroup:
        return cls(torch.cat([g.index for g in groups]), torch.cat([g.grads for g in groups]))


@dataclass
class OuterGroup(Group):
    """A linear layer ``y = W x + b``: per-triple ``dW = sum_p delta_p x_p^T`` and ``db = sum_p delta_p``.

    ``p`` runs over the layer's calls and positions for one triple (usually one).
    ``<dW, dW'> + <db, db'> = sum_{p, q} <delta_p, delta'_q> (<x_p, x'_q> + 1)``.

    :param inputs: shape: (B, P, d_in), or None when the weight is not differentiated
    :param deltas: shape: (B, P, d_out), the gradient of the loss with respect to the layer output
    :param bias: whether the bias is differentiated
    """

    inputs: torch.Tensor | None
    deltas: torch.Tensor
    bias: bool

    @property
    def size(self) -> int:
        return self.deltas.shape[0]

    def _combine(self, dd: torch.Tensor, xx: torch.Tensor | None) -> torch.Tensor:
        if xx is None:
            return dd
        return dd * (xx + 1.0) if self.bias else dd * xx

    def kernel(self, other: OuterGroup) -> torch.Tensor:
        if self.deltas.shape[1] == 1 and other.deltas.shape[1] == 1:
            dd = self.deltas[:, 0] @ other.deltas[:, 0].T
            xx = None if self.inputs is None else self.inputs[:, 0] @ other.inputs[:, 0].T
            return self._combine(dd, xx)
        dd = torch.einsum("bpo,mqo->bmpq", self.deltas, other.deltas)
        xx = None if self.inputs is None else torch.einsum("bpi,mqi->bmpq", self.inputs, other.inputs)
        return self._combine(dd, xx).sum(dim=(2, 3))

    def add_kernel(self, other: OuterGroup, out: torch.Tensor, transposed: bool = False) -> None:
        if self.deltas.shape[1] == 1 and other.deltas.shape[1] == 1:
            first, second = (other, self) if transposed else (self, other)
            dd = first.deltas[:, 0] @ second.deltas[:, 0].T
            if self.inputs is None:
                out += dd
                return
            xx = first.inputs[:, 0] @ second.inputs[:, 0].T
            if self.bias:
                xx += 1.0
            out.addcmul_(dd, xx)
            return
        out += self.kernel(other).T if transposed else self.kernel(other)

    def self_kernel(self) -> torch.Tensor:
        dd = self.deltas @ self.deltas.transpose(1, 2)
        xx = None if self.inputs is None else self.inputs @ self.inputs.transpose(1, 2)
        return self._combine(dd, xx).sum(dim=(1, 2))

    @classmethod
    def cat(cls, groups: list[OuterGroup]) -> OuterGroup:
        inputs = None if groups[0].inputs is None else torch.cat([g.inputs for g in groups])
        return cls(inputs, torch.cat([g.deltas for g in groups]), groups[0].bias)


@dataclass
class Features:
    """All groups of per-triple gradient factors for a batch of ``B`` triples, keyed by group name."""

    groups: dict[str, Group]
    #: shape: (B,), the gradient norms, when a cosine normalisation asks for them
    norms: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return next(iter(self.groups.values())).size

    def kernel(self, other: Features, transposed: bool = False) -> torch.Tensor:
        """:return: shape: (B, M), the exact inner products of the per-triple gradients; (M, B) when
        ``transposed`` (computed in that layout, not transposed afterwards)"""
        first = next(iter(self.groups.values()))
        reference = first.grads if hasattr(first, "grads") else first.deltas
        shape = (other.size, self.size) if transposed else (self.size, other.size)
        total = reference.new_zeros(shape)
        for key, group in self.groups.items():
            group.add_kernel(other.groups[key], total, transposed)
        return total

    @property
    def nbytes(self) -> int:
        """The memory the factors hold, in bytes."""

        def size(value) -> int:
            if isinstance(value, torch.Tensor):
                return value.numel() * value.element_size()
            return sum(size(v) for v in vars(value).values()) if isinstance(value, Group) else 0

        return sum(size(group) for group in self.groups.values())

    def self_kernel(self) -> torch.Tensor:
        """:return: shape: (B,), the squared norms of the per-triple gradients"""
        return sum(group.self_kernel() for group in self.groups.values())

    @classmethod
    def cat(cls, parts: list[Features]) -> Features:
        if len(parts) == 1:
            return parts[0]
        keys = parts[0].groups.keys()
        return cls({k: type(parts[0].groups[k]).cat([p.groups[k] for p in parts]) for k in keys})
