"""The ``softmax`` loss in closed form: the entity table as rows plus rank-one candidate terms.

With ``l = -log softmax_e s(q, e)[target]`` and scores linear in the candidate's embedding,
``s(q, e) = <q, x_e>`` (a bias is one more table with ``q = 1``), the gradient of one triple's loss with
respect to an entity table is

    G(z) = sum_s onehot(idx_s) (x) g_s   +   sum_k delta_k (x) q_k

* ``g_s``: the gradient of the rows that the *query* looks up (the head for tail prediction), exactly as for
  the ``bce`` loss but with the upstream ``sum_e delta_e x_e`` (see ``shared/TRACIN_MATH.md`` section 7);
* ``delta_k = softmax(s) - onehot(target)``: shape (E,), one per direction ``k`` (tails, heads);
* ``q_k``: the query, ``ds_e / dx_e``.

Per direction, one forward pass with the true candidate in the candidate slot as a leaf gives ``q`` (the
gradient with respect to that leaf, kept differentiable), all E scores as ``q @ table^T``, and ``delta``; then
one backward pass of ``sum_k <q_k, sum_e delta_k,e x_e>`` (``delta`` held fixed) gives the loss gradient of
every query-side parameter. No per-triple gradient of an entity table is ever built: two triples' table
gradients meet through E-length and d-length dot products only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..losses import head_queries
from ._factors import Group, RowGroup

__all__ = ["CandidateGroup", "attach_candidates", "softmax_unsupported", "SoftmaxDirections", "softmax_directions",
           "surrogate_scores", "linear_queries", "softmax_deltas"]

#: interactions whose score is linear in the tail's representations, and in the head's
_TAIL_LINEAR = {"DistMultInteraction", "ComplExInteraction", "ConvEInteraction", "TuckERInteraction",
                "RESCALInteraction"}
_HEAD_LINEAR = {"DistMultInteraction", "ComplExInteraction", "RESCALInteraction"}


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

    def kernel(self, other: "CandidateGroup") -> torch.Tensor:
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
    def cat(cls, groups: list["CandidateGroup"]) -> "CandidateGroup":
        return cls(RowGroup.cat([g.rows for g in groups]), torch.cat([g.deltas for g in groups]),
                   torch.cat([g.queries for g in groups]))


def attach_candidates(groups: dict, tables: dict[str, int], deltas: list[torch.Tensor],
                      queries: list[dict[int, torch.Tensor]]) -> None:
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
        used = torch.tensor([index in q for q in queries], dtype=stacked.dtype, device=stacked.device)
        q = torch.stack([qs.get(index, zero) for qs in queries], dim=1)
        groups[name] = CandidateGroup(rows, stacked * used.view(1, -1, 1), q)


def softmax_unsupported(model) -> str | None:
    """Why the closed form cannot take this model's ``softmax`` loss, or None when it can."""
    from pykeen.nn.representation import Embedding

    interaction = type(model.interaction).__name__
    if interaction not in _TAIL_LINEAR:
        return f"{interaction} scores are not linear in the candidate tail"
    if not model.use_inverse_triples and interaction not in _HEAD_LINEAR:
        return f"{interaction} scores are not linear in the candidate head (train with inverse triples)"
    for i in {*model.interaction.tail_indices, *model.interaction.head_indices}:
        rep = model.entity_representations[i]
        if type(rep) is not Embedding or rep.normalizer is not None or rep.unique:
            return f"entity representation {i} ({type(rep).__name__}) is not a plain embedding"
    return None


@dataclass
class SoftmaxDirections:
    """The two prediction directions of a batch, with their candidate tables.

    :param queries: per direction, shape (B, 2) internal ids: ``(h, r)`` for tails, ``(r, t)`` for heads
    :param head_side: per direction, whether the candidate is the head slot (``score_h``)
    :param targets: per direction, shape (B,): the true candidate
    :param candidates: per direction, the entity representation indices in the candidate slot
    """

    queries: list[torch.Tensor]
    head_side: list[bool]
    targets: list[torch.Tensor]
    candidates: list[tuple[int, ...]]


def softmax_directions(model, internal: torch.Tensor) -> SoftmaxDirections:
    """Tail prediction, then head prediction as the model was trained (inverse triples: tails of ``(t, r_inv)``).

    :param internal: shape: (B, 3), internal ids
    """
    tails, heads = tuple(model.interaction.tail_indices), tuple(model.interaction.head_indices)
    batch, inverse = head_queries(model, internal)
    return SoftmaxDirections(
        queries=[internal[:, :2], batch], head_side=[False, not inverse],
        targets=[internal[:, 2], internal[:, 0]], candidates=[tails, tails if inverse else heads],
    )


def candidate_leaf(model, index: int, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A leaf holding ``upstream`` in storage layout, and its view as the representation's output.

    :param upstream: shape: (B, D), e.g. the rows of the true candidates
    :return: the leaf (B, D) and the representation-shaped tensor (B, *shape), complex where the table is
    """
    rep = model.entity_representations[index]
    leaf = upstream.detach().contiguous().requires_grad_(True)
    if rep.is_complex:
        return leaf, torch.view_as_complex(leaf.view(leaf.shape[0], *rep._shape))
    return leaf, leaf.view(leaf.shape[0], *rep._shape)


def surrogate_scores(model, directions: SoftmaxDirections, upstreams: list[dict[int, torch.Tensor]]):
    """Score ``s(q, u)`` per direction, with the candidate slot a leaf holding ``u``.

    :param upstreams: per direction, representation index -> ``u`` (B, D) in storage layout
    :return: per direction the scores (B,) and the candidate leaves {representation index: leaf (B, D)}
    """
    out = []
    for query, head_side, candidates, upstream in zip(directions.queries, directions.head_side,
                                                      directions.candidates, upstreams):
        leaves, cand = {}, []
        for i in candidates:
            leaves[i], x = candidate_leaf(model, i, upstream[i])
            cand.append(x)
        rel_index = query[:, 0] if head_side else query[:, 1]
        ent_index = query[:, 1] if head_side else query[:, 0]
        other_slot = model.interaction.tail_indices if head_side else model.interaction.head_indices
        entity = [model.entity_representations[i](indices=ent_index) for i in other_slot]
        relation = [rep(indices=rel_index) for rep in model.relation_representations]
        squeeze = lambda xs: xs[0] if len(xs) == 1 else xs  # noqa: E731
        h, t = (squeeze(cand), squeeze(entity)) if head_side else (squeeze(entity), squeeze(cand))
        scores = model.interaction.score_hrt(h=h, r=squeeze(relation), t=t).view(-1)
        out.append((scores, leaves))
    return out


def linear_queries(model, directions: SoftmaxDirections) -> list[tuple[torch.Tensor, dict[int, torch.Tensor]]]:
    """Per direction, one forward pass with the true candidate in the candidate slot (as a leaf), and the query
    ``q_i = ds / dx_i`` of each candidate table, kept differentiable in the parameters (``create_graph``).

    For scores linear in the candidate, ``s_e = sum_i <q_i, x_e,i>``: all E scores are then one matrix product
    per table, instead of running the interaction once per candidate (which PyKEEN's ``score_t`` does for
    ConvE), and ``<q, u>`` for any fixed ``u`` has the parameter gradient of ``s(q, u)`` without a second
    forward pass.

    :return: per direction, the scores of the true triples (B,) and {representation index: q (B, D)}
    """
    upstreams = [{i: model.entity_representations[i]._embeddings.weight.detach()[target] for i in candidates}
                 for target, candidates in zip(directions.targets, directions.candidates)]
    out = []
    for scores, leaves in surrogate_scores(model, directions, upstreams):
        queries = torch.autograd.grad(scores.sum(), list(leaves.values()), create_graph=True)
        out.append((scores, dict(zip(leaves, queries))))
    return out


def softmax_deltas(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``softmax(s) - onehot(target)``, the gradient of the cross-entropy with respect to the scores.

    :param scores: shape: (B, E)
    :param targets: shape: (B,)
    """
    return torch.softmax(scores, dim=1) - F.one_hot(targets, scores.shape[1]).to(scores.dtype)
