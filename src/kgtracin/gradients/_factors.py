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

#: Elements of the (pairs x dim) product that one step of the row kernel may hold.
_ROW_CHUNK_ELEMENTS = 1 << 23


class Group(ABC):
    """One parameter group's per-triple gradients for a batch of ``B`` triples."""

    @property
    @abstractmethod
    def size(self) -> int:
        """The number of triples ``B``."""

    @abstractmethod
    def kernel(self, other: "Group") -> torch.Tensor:
        """Inner products with another batch's gradients of the same group.

        :return: shape: (B, M), where M is ``other.size``
        """

    @abstractmethod
    def self_kernel(self) -> torch.Tensor:
        """Squared norms of each triple's gradient. :return: shape: (B,)"""

    @classmethod
    @abstractmethod
    def cat(cls, groups: list["Group"]) -> "Group":
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

    def kernel(self, other: "DenseGroup") -> torch.Tensor:
        return self.grads @ other.grads.T

    def self_kernel(self) -> torch.Tensor:
        return (self.grads * self.grads).sum(dim=1)

    @classmethod
    def cat(cls, groups: list["DenseGroup"]) -> "DenseGroup":
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
            rows = self.index.reshape(-1)
            triple = torch.arange(self.size, device=rows.device).repeat_interleave(self.index.shape[1])
            rows, order = torch.sort(rows, stable=True)
            self._sorted = (rows, triple[order], self.grads.reshape(rows.shape[0], -1)[order])
        return self._sorted

    def kernel(self, other: "RowGroup") -> torch.Tensor:
        out = self.grads.new_zeros(self.size, other.size)
        test_rows, test_triple, test_grads = other._sorted_entries()
        rows = self.index.reshape(-1)
        start = torch.searchsorted(test_rows, rows, side="left")
        count = torch.searchsorted(test_rows, rows, side="right") - start
        keep = count.nonzero().squeeze(1)
        if keep.numel() == 0:
            return out
        start, count = start[keep], count[keep]
        train_triple = keep // self.index.shape[1]
        train_grads = self.grads.reshape(rows.shape[0], -1)[keep]
        dim = train_grads.shape[1]
        # enumerate the (train slot, test slot) pairs that share a row, in chunks of bounded memory
        ends = torch.cumsum(count, dim=0)
        step = max(1, _ROW_CHUNK_ELEMENTS // max(dim, 1))
        total = int(ends[-1])
        first = 0
        flat = out.view(-1)
        while first < total:
            last = min(total, first + step)
            pair = torch.arange(first, last, device=rows.device)
            entry = torch.searchsorted(ends, pair, side="right")
            offset = pair - (ends[entry] - count[entry])
            test_entry = start[entry] + offset
            values = (train_grads[entry] * test_grads[test_entry]).sum(dim=1)
            flat.index_add_(0, train_triple[entry] * other.size + test_triple[test_entry], values)
            first = last
        return out

    def self_kernel(self) -> torch.Tensor:
        gram = self.grads @ self.grads.transpose(1, 2)  # (B, S, S)
        same = self.index.unsqueeze(2) == self.index.unsqueeze(1)
        return (gram * same).sum(dim=(1, 2))

    @classmethod
    def cat(cls, groups: list["RowGroup"]) -> "RowGroup":
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

    def kernel(self, other: "OuterGroup") -> torch.Tensor:
        if self.deltas.shape[1] == 1 and other.deltas.shape[1] == 1:
            dd = self.deltas[:, 0] @ other.deltas[:, 0].T
            xx = None if self.inputs is None else self.inputs[:, 0] @ other.inputs[:, 0].T
            return self._combine(dd, xx)
        dd = torch.einsum("bpo,mqo->bmpq", self.deltas, other.deltas)
        xx = None if self.inputs is None else torch.einsum("bpi,mqi->bmpq", self.inputs, other.inputs)
        return self._combine(dd, xx).sum(dim=(2, 3))

    def self_kernel(self) -> torch.Tensor:
        dd = self.deltas @ self.deltas.transpose(1, 2)
        xx = None if self.inputs is None else self.inputs @ self.inputs.transpose(1, 2)
        return self._combine(dd, xx).sum(dim=(1, 2))

    @classmethod
    def cat(cls, groups: list["OuterGroup"]) -> "OuterGroup":
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

    def kernel(self, other: "Features") -> torch.Tensor:
        """:return: shape: (B, M), the exact inner products of the per-triple gradients"""
        total = None
        for key, group in self.groups.items():
            part = group.kernel(other.groups[key])
            total = part if total is None else total + part
        return total

    def self_kernel(self) -> torch.Tensor:
        """:return: shape: (B,), the squared norms of the per-triple gradients"""
        return sum(group.self_kernel() for group in self.groups.values())

    @classmethod
    def cat(cls, parts: list["Features"]) -> "Features":
        if len(parts) == 1:
            return parts[0]
        keys = parts[0].groups.keys()
        return cls({k: type(parts[0].groups[k]).cat([p.groups[k] for p in parts]) for k in keys})
