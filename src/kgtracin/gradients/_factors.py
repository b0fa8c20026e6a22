"""Per-triple gradient factors and the exact inner products (kernels) between them.

A :class:`Features` object describes the per-triple gradients of a batch of ``B`` triples, split into
parameter groups. ``train.kernel(test)`` gives the ``(B, M)`` matrix of inner products
``<grad l(z_i), grad l(z'_j)>`` summed over the groups; ``self_kernel()`` gives ``|grad l(z_i)|^2``.
The groups never hold a per-triple gradient of a large parameter: embedding tables are kept as a few row
gradients, linear layers as the outer-product factors ``(x, delta)`` (``docs/mathematics.md``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from .row_kernel import Slots, add_row_products

__all__ = ["Group", "DenseGroup", "RowGroup", "OuterGroup", "Features"]


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

    def pair_kernel(self, other: Group, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The inner products of the pairs ``(i_p, j_p)`` only: ``self.kernel(other)[i, j]`` without the rest of
        the block. Groups override it to touch only the pairs' factors.

        :param i: shape: (P,), dtype: long, rows of this batch
        :param j: shape: (P,), dtype: long, rows of ``other``
        :return: shape: (P,)
        """
        return self.kernel(other)[i, j]

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

    def pair_kernel(self, other: DenseGroup, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return (self.grads[i] * other.grads[j]).sum(dim=1)

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
        """Grouped by row, both sides sorted by row (:mod:`kgtracin.gradients.row_kernel`)."""
        test = Slots(*other._sorted_entries())
        rows, triple, order = self._sorted_index()
        lo = torch.searchsorted(test.rows, rows, side="left")
        hi = torch.searchsorted(test.rows, rows, side="right")
        keep = (hi > lo).nonzero().squeeze(1)
        if keep.numel() == 0:
            return
        # only the slots that meet a test row
        train = Slots(rows[keep], triple[keep], self.grads.reshape(-1, self.grads.shape[-1])[order[keep]])
        # flat position of (train triple i, test triple j): i * M + j, or j * B + i when transposed
        strides = (1, self.size) if transposed else (other.size, 1)
        add_row_products(out.view(-1), train, test, lo[keep], hi[keep], strides)

    def pair_kernel(self, other: RowGroup, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        gram = self.grads[i] @ other.grads[j].transpose(1, 2)  # (P, S, S')
        same = self.index[i].unsqueeze(2) == other.index[j].unsqueeze(1)
        return (gram * same).sum(dim=(1, 2))

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

    def pair_kernel(self, other: OuterGroup, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        dd = self.deltas[i] @ other.deltas[j].transpose(1, 2)  # (P, p, q)
        xx = None if self.inputs is None else self.inputs[i] @ other.inputs[j].transpose(1, 2)
        return self._combine(dd, xx).sum(dim=(1, 2))

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

    def pair_kernel(self, other: Features, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The inner products of the pairs ``(i_p, j_p)`` only, ``self.kernel(other)[i, j]``, summed over the
        groups.

        :param i: shape: (P,), dtype: long, rows of this batch
        :param j: shape: (P,), dtype: long, rows of ``other``
        :return: shape: (P,)
        """
        return sum(group.pair_kernel(other.groups[key], i, j) for key, group in self.groups.items())

    def self_kernel(self) -> torch.Tensor:
        """:return: shape: (B,), the squared norms of the per-triple gradients"""
        return sum(group.self_kernel() for group in self.groups.values())

    @classmethod
    def cat(cls, parts: list[Features]) -> Features:
        if len(parts) == 1:
            return parts[0]
        keys = parts[0].groups.keys()
        return cls({k: type(parts[0].groups[k]).cat([p.groups[k] for p in parts]) for k in keys})
