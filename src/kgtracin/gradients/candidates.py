"""Candidate groups: an entity table's per-triple gradient under a 1-N loss, as rows plus rank-one terms.

Under a 1-N loss (``softmax``, :mod:`kgtracin.losses.softmax`) one triple's gradient with respect to an entity
table is

    G(z) = sum_s onehot(idx_s) (x) g_s   +   sum_k delta_k (x) q_k

* ``g_s``: the gradient of the rows that the *query* looks up, shape (D,) each;
* ``delta_k``: ``dl/ds`` over all E candidates in direction ``k``, shape (E,);
* ``q_k``: the query ``ds_e / dx_e``, shape (D,).

Two triples' inner product then needs only E-length and D-length dot products (``docs/mathematics.md``,
section 4): no per-triple gradient of an entity table is ever built. The loss supplies ``delta`` and ``q``
(:meth:`kgtracin.losses.base.TripleLoss.fast_objective`); this module only does the algebra.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ._factors import Group, RowGroup

__all__ = ["CandidateGroup", "attach_candidates", "sampled_products"]


@dataclass
class CandidateGroup(Group):
    """An entity table under a 1-N loss: query-side rows plus rank-one candidate terms, per triple.

    :param rows: the rows the query looks up: index (B, S), grads (B, S, D)
    :param deltas: shape: (B, K, E); ``dl/ds`` over all candidates, per direction
    :param queries: shape: (B, K, D); ``ds_e/dx_e`` per direction, in the table's storage layout
    """

    rows: RowGroup
    deltas: torch.Tensor
    queries: torch.Tensor

    @property
    def size(self) -> int:
        return self.deltas.shape[0]

    @staticmethod
    def _cross(deltas: torch.Tensor, queries: torch.Tensor, rows: RowGroup) -> torch.Tensor:
        """``sum_{k, s} delta_k(a)[idx_s(b)] <q_k(a), g_s(b)>``. :return: shape: (A, B)"""
        a, k, _ = deltas.shape
        b, s = rows.index.shape
        if s == 0:
            return deltas.new_zeros(a, b)
        gathered = deltas.reshape(a * k, -1)[:, rows.index.reshape(-1)]  # (A K, B S)
        dots = queries.reshape(a * k, -1) @ rows.grads.reshape(b * s, -1).T  # (A K, B S)
        return (gathered * dots).reshape(a, k, b, s).sum(dim=(1, 3))

    def kernel(self, other: CandidateGroup) -> torch.Tensor:
        b, k, _ = self.deltas.shape
        m, j, _ = other.deltas.shape
        dd = self.deltas.reshape(b * k, -1) @ other.deltas.reshape(m * j, -1).T
        qq = self.queries.reshape(b * k, -1) @ other.queries.reshape(m * j, -1).T
        out = (dd * qq).reshape(b, k, m, j).sum(dim=(1, 3))
        out += self._cross(self.deltas, self.queries, other.rows)
        out += self._cross(other.deltas, other.queries, self.rows).T
        if self.rows.index.shape[1] and other.rows.index.shape[1]:
            out += self.rows.kernel(other.rows)
        return out

    def pair_kernel(self, other: CandidateGroup, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The pairs' inner products without gathering any E-length row: the ``delta`` dot products are sampled
        from the (B K, M J) product at the pairs only (:func:`sampled_products`), the cross terms read the
        ``delta`` entries at the other side's row indices."""
        dd = sampled_products(self.deltas, other.deltas, i, j)  # (P, K, J)
        qq = self.queries[i] @ other.queries[j].transpose(1, 2)
        out = (dd * qq).sum(dim=(1, 2))
        out += _pair_cross(self.deltas, self.queries, i, other.rows, j)
        out += _pair_cross(other.deltas, other.queries, j, self.rows, i)
        if self.rows.index.shape[1] and other.rows.index.shape[1]:
            out += self.rows.pair_kernel(other.rows, i, j)
        return out

    def self_kernel(self) -> torch.Tensor:
        dd = self.deltas @ self.deltas.transpose(1, 2)  # (B, K, K)
        qq = self.queries @ self.queries.transpose(1, 2)
        out = (dd * qq).sum(dim=(1, 2))
        if self.rows.index.shape[1]:
            index, grads = self.rows.index, self.rows.grads  # (B, S), (B, S, D)
            gathered = torch.gather(self.deltas, 2, index.unsqueeze(1).expand(-1, self.deltas.shape[1], -1))
            dots = self.queries @ grads.transpose(1, 2)  # (B, K, S)
            out = out + 2 * (gathered * dots).sum(dim=(1, 2)) + self.rows.self_kernel()
        return out

    @classmethod
    def cat(cls, groups: list[CandidateGroup]) -> CandidateGroup:
        return cls(
            RowGroup.cat([g.rows for g in groups]),
            torch.cat([g.deltas for g in groups]),
            torch.cat([g.queries for g in groups]),
        )


#: dtypes that ``torch.sparse.sampled_addmm`` takes on every device
_SAMPLED_DTYPES = (torch.float32, torch.float64)


def sampled_products(first: torch.Tensor, second: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``first[i_p, k] . second[j_p, l]`` for every pair p and directions k, l: the product
    ``(A K, E) @ (E, C L)`` sampled at the pairs only (``torch.sparse.sampled_addmm``), no row gathered.

    :param first: shape: (A, K, E)
    :param second: shape: (C, L, E)
    :param i: shape: (P,), rows of ``first``; ``j``: shape (P,), rows of ``second``; the pairs are distinct
    :return: shape: (P, K, L)
    """
    if first.dtype not in _SAMPLED_DTYPES:  # cuSPARSE's SDDMM takes no half precision: gather the pairs' rows
        return first[i] @ second[j].transpose(1, 2)
    (a, k, e), (c, l_, _) = first.shape, second.shape
    rows = (i.view(-1, 1, 1) * k + torch.arange(k, device=i.device).view(1, k, 1)).expand(-1, k, l_).reshape(-1)
    cols = (j.view(-1, 1, 1) * l_ + torch.arange(l_, device=i.device).view(1, 1, l_)).expand(-1, k, l_).reshape(-1)
    order = torch.argsort(rows * (c * l_) + cols)  # CSR: by row, then column
    crow = torch.zeros(a * k + 1, dtype=torch.long, device=i.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=a * k), 0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": sampled_addmm is what is used of it
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(crow, cols[order], first.new_zeros(rows.shape[0]), (a * k, c * l_))
    sampled = torch.sparse.sampled_addmm(pattern, first.reshape(a * k, e), second.reshape(c * l_, e).T).values()
    out = torch.empty_like(sampled)
    out[order] = sampled
    return out.view(-1, k, l_)


def _pair_cross(deltas: torch.Tensor, queries: torch.Tensor, a: torch.Tensor, rows: RowGroup, b: torch.Tensor):
    """``sum_{k, s} delta_k(a_p)[idx_s(b_p)] <q_k(a_p), g_s(b_p)>`` per pair: only the ``delta`` entries at the
    other side's rows are read. :param deltas: shape: (A, K, E); ``queries``: (A, K, D). :return: shape: (P,)"""
    if rows.index.shape[1] == 0:
        return deltas.new_zeros(a.shape[0])
    index = rows.index[b]  # (P, S)
    directions = torch.arange(deltas.shape[1], device=a.device).view(1, -1, 1)
    picked = deltas[a.view(-1, 1, 1), directions, index.unsqueeze(1)]  # (P, K, S)
    dots = queries[a] @ rows.grads[b].transpose(1, 2)  # (P, K, S)
    return (picked * dots).sum(dim=(1, 2))


def attach_candidates(
    groups: dict, tables: dict[str, int], deltas: list[torch.Tensor], queries: list[dict[int, torch.Tensor]]
) -> None:
    """Turn the row groups of the candidate tables into :class:`CandidateGroup` s, in place.

    :param groups: group name -> group; a selected candidate table's entry is its query-side :class:`RowGroup`
    :param tables: parameter name -> entity representation index, for every candidate table
    :param deltas: per direction, shape (B, E)
    :param queries: per direction, representation index -> ``q`` (B, D), for the tables in that direction's
        candidate slot; a table absent from a direction gets ``delta = 0`` there
    """
    if not tables or not deltas:  # not the softmax loss
        return
    stacked = torch.stack(deltas, dim=1)  # (B, K, E)
    for name, index in tables.items():
        if name not in groups:  # not a selected parameter
            continue
        rows = groups[name]
        zero = rows.grads.new_zeros(stacked.shape[0], rows.grads.shape[-1])
        used = [index in q for q in queries]
        q = torch.stack([qs.get(index, zero) for qs in queries], dim=1)
        if all(used):  # the usual case: no (B, K, E) copy
            groups[name] = CandidateGroup(rows, stacked, q)
            continue
        mask = torch.tensor(used, dtype=stacked.dtype, device=stacked.device)
        groups[name] = CandidateGroup(rows, stacked * mask.view(1, -1, 1), q)
