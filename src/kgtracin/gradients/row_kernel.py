"""The row kernel: inner products of embedding-row gradients between two batches, grouped by table row.

An embedding table's gradient for one triple is non-zero only in the few rows the triple looks up (its
*slots*), so ``<grad_E l(z), grad_E l(z')> = sum_{a, b} [row_a(z) == row_b(z')] <g_a(z), g_b(z')>``
(``docs/mathematics.md``, section 3). Both sides' slots are sorted by row; the training slots of a row meet
the test slots of the same row in matrix products, and no per-pair gradient is ever gathered. Two exact
strategies compute the same sums; the cheaper by a CPU cost model is taken:

* **tiles**: runs of consecutive training slots (32, 128 or 512) meet the contiguous range of test slots
  their rows span, masked to equal rows (few operations; wasted products where a run spans rows);
* **buckets**: every row's ``(a, t)`` block of training by test slots, rows bucketed by ``(a, t)`` rounded up
  to powers of two, one padded batched product per bucket (products near the pairs; more operations).

Shapes: ``n`` training slots and ``m`` test slots that share a row, rows of ``D`` numbers. The result is added
into a flat view of the ``(B, M)`` kernel block (or of its transpose).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Slots", "add_row_products"]

#: Tile sizes tried by the tile strategy; the cheapest by estimate is taken.
ROW_TILES = (32, 128, 512)
#: The most (training slot x test slot) products one tile may hold, beyond the smallest tile size.
TILE_LIMIT = 1 << 22
#: Rough costs on a CPU, in seconds, for choosing the strategy (both are exact).
COST_PER_PRODUCT, COST_PER_TILE, COST_PER_BUCKET = 1e-10, 6e-5, 2e-4


@dataclass(frozen=True)
class Slots:
    """Slots sorted by table row.

    :param rows: shape: (n,), dtype: long, sorted; the table row of each slot
    :param triple: shape: (n,), dtype: long; the position of the slot's triple in its batch
    :param grads: shape: (n, D); the loss gradient with respect to the slot's row
    """

    rows: torch.Tensor
    triple: torch.Tensor
    grads: torch.Tensor


@dataclass(frozen=True)
class _Blocks:
    """Each distinct training row's block of slots: ``first`` (r,) and ``count`` (r,) into the training slots,
    ``test_first`` (r,) and ``test_count`` (r,) into the test slots."""

    first: torch.Tensor
    count: torch.Tensor
    test_first: torch.Tensor
    test_count: torch.Tensor


def _pow2(counts: torch.Tensor) -> torch.Tensor:
    """Each count rounded up to a power of two (the padded width of its bucket)."""
    return torch.pow(2, torch.ceil(torch.log2(counts.double()))).long()


def _tiles(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """The test range spanned by each run of ``size`` sorted training slots.

    :param lo: shape: (n,), each training slot's first test slot of the same row; ``hi``: one past its last
    :return: each tile's range start (T,) and stop (T,), the total and the largest number of products of a tile
    """
    tile_lo, tile_hi = lo[::size], hi[size - 1 :: size]
    if tile_hi.numel() < tile_lo.numel():
        tile_hi = torch.cat([tile_hi, hi[-1:]])
    tile_len = torch.full_like(tile_lo, size)
    tile_len[-1] = lo.shape[0] - size * (tile_lo.numel() - 1)
    products = tile_len * (tile_hi - tile_lo)
    return tile_lo, tile_hi, int(products.sum()), int(products.max())


def _tile_products(
    flat: torch.Tensor, train: Slots, test: Slots, strides: tuple[int, int], size: int, starts: list, stops: list
) -> None:
    """The tile strategy: tile ``k`` holds training slots ``k size .. (k + 1) size`` and test slots
    ``starts[k] .. stops[k]``; one (size, range) product each, masked to equal rows."""
    train_stride, test_stride = strides
    for first, a, b in zip(range(0, train.rows.shape[0], size), starts, stops):
        last = min(train.rows.shape[0], first + size)
        products = train.grads[first:last] @ test.grads[a:b].T  # (tile, range)
        products.mul_(train.rows[first:last, None] == test.rows[None, a:b])  # only slots of the same row
        target = train.triple[first:last, None] * train_stride + test.triple[None, a:b] * test_stride
        flat.index_add_(0, target.view(-1), products.view(-1))


def _bucket_products(
    flat: torch.Tensor,
    train: Slots,
    test: Slots,
    strides: tuple[int, int],
    blocks: _Blocks,
    a_width: torch.Tensor,
    t_width: torch.Tensor,
    bucket: torch.Tensor,
    keys: list[int],
) -> None:
    """The bucket strategy: the rows whose padded block is ``(a, t)`` (``bucket == key``) in one batched
    product of (rows, a, D) by (rows, D, t), padding masked out.

    :param a_width: shape: (r,), each row's training count rounded up to a power of two; ``t_width``: test
    :param bucket: shape: (r,), each row's bucket key
    """
    train_stride, test_stride = strides
    for key in keys:
        chosen = (bucket == key).nonzero().squeeze(1)
        a, t = int(a_width[chosen[0]]), int(t_width[chosen[0]])
        a_index = (blocks.first[chosen, None] + torch.arange(a)).clamp(max=train.rows.shape[0] - 1)  # (r, a)
        t_index = (blocks.test_first[chosen, None] + torch.arange(t)).clamp(max=test.rows.shape[0] - 1)  # (r, t)
        valid = (torch.arange(a) < blocks.count[chosen, None])[:, :, None] & (
            torch.arange(t) < blocks.test_count[chosen, None]
        )[:, None, :]
        products = torch.bmm(train.grads[a_index], test.grads[t_index].transpose(1, 2))  # (r, a, t)
        target = train.triple[a_index][:, :, None] * train_stride + test.triple[t_index][:, None, :] * test_stride
        flat.index_add_(0, target[valid], products[valid])


def add_row_products(
    flat: torch.Tensor, train: Slots, test: Slots, lo: torch.Tensor, hi: torch.Tensor, strides: tuple[int, int]
) -> None:
    """Add ``<g_a, g_b>`` for every training slot ``a`` and test slot ``b`` of the same row into ``flat``.

    :param flat: shape: (B * M,), a flat view of the kernel block; the pair of training triple ``i`` and test
        triple ``j`` goes to ``i * strides[0] + j * strides[1]``
    :param train: the training slots that share a row with some test slot (n of them)
    :param test: all the test slots (m)
    :param lo: shape: (n,), each training slot's first test slot of the same row; ``hi``: one past its last
    """
    dim = train.grads.shape[1]
    tile_cost, tile = float("inf"), None
    for i, size in enumerate(ROW_TILES):
        tile_lo, tile_hi, products, largest = _tiles(lo, hi, size)
        if i and largest > TILE_LIMIT:
            break
        cost = products * dim * COST_PER_PRODUCT + tile_lo.numel() * COST_PER_TILE
        if cost < tile_cost:
            tile_cost, tile = cost, (size, tile_lo.tolist(), tile_hi.tolist())
    _, a_count = torch.unique_consecutive(train.rows, return_counts=True)
    a_first = torch.cumsum(a_count, 0) - a_count
    blocks = _Blocks(a_first, a_count, lo[a_first], (hi - lo)[a_first])
    a_width, t_width = _pow2(a_count), _pow2(blocks.test_count)
    bucket = a_width * (int(t_width.max()) + 1) + t_width
    buckets = torch.unique(bucket)
    bucket_cost = float((a_width * t_width).sum()) * dim * COST_PER_PRODUCT + buckets.numel() * COST_PER_BUCKET
    if tile_cost <= bucket_cost:
        _tile_products(flat, train, test, strides, *tile)
    else:
        _bucket_products(flat, train, test, strides, blocks, a_width, t_width, bucket, buckets.tolist())
