"""The ``softmax`` loss: the 1-N cross-entropy of a triple in both directions, over all entities, unfiltered.

``l(h, r, t) = -log softmax_t' s(h, r, t')[t] - log softmax_h' s(h', r, t)[h]``. It matches LCWA training with a
cross-entropy (softmax) loss, and asks the ranking question "why is t ranked above the other tails?". For models
trained with inverse triples the head direction is scored as PyKEEN trained it: the tails of ``(t, r_inv, ?)``.

**Its closed form** (``docs/mathematics.md``, section 4). With scores linear in the candidate's embedding,
``s(q, e) = <q, x_e>`` (a bias is one more table with ``q = 1``), one triple's gradient with respect to an entity
table is

    G(z) = sum_s onehot(idx_s) (x) g_s   +   sum_k delta_k (x) q_k

* ``g_s``: the gradient of the rows that the *query* looks up (the head for tail prediction);
* ``delta_k = softmax(s) - onehot(target)``: shape (E,), one per direction ``k`` (tails, heads);
* ``q_k``: the query, ``ds_e / dx_e``.

Per direction, one forward pass with the true candidate in the candidate slot as a leaf gives ``q`` (the gradient
with respect to that leaf, kept differentiable), all E scores as ``q @ table^T``, and ``delta``; one backward pass
of ``sum_k <q_k, sum_e delta_k,e x_e>`` (``delta`` held fixed) then gives the loss gradient of every query-side
parameter. No per-triple gradient of an entity table is ever built: two triples' table gradients meet through
E-length and d-length dot products only (:class:`kgtracin.gradients.candidates.CandidateGroup`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..compat import embedding_table, entity_slots, inverse_relations, row_shape, table_name
from ..errors import KGTracinError
from .base import Candidates, TripleLoss

__all__ = [
    "SoftmaxLoss",
    "LOSS",
    "head_queries",
    "softmax_unsupported",
    "SoftmaxDirections",
    "softmax_directions",
    "surrogate_scores",
    "linear_queries",
    "distinct_queries",
    "query_order",
]

#: interactions whose score is linear in the tail's representations, and in the head's
_TAIL_LINEAR = {
    "DistMultInteraction",
    "ComplExInteraction",
    "ConvEInteraction",
    "TuckERInteraction",
    "RESCALInteraction",
}
_HEAD_LINEAR = {"DistMultInteraction", "ComplExInteraction", "RESCALInteraction"}


def head_queries(model, hrt: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The batch that scores all candidate heads of each triple, as the model was trained to.

    :param hrt: shape: (B, 3), internal ids
    :return: ``(batch, inverse)``: with inverse triples, ``(t, r_inv)`` pairs for ``score_t`` (inverse True);
        otherwise ``(r, t)`` pairs for ``score_h``
    """
    if model.use_inverse_triples:
        return torch.stack([hrt[:, 2], inverse_relations(model, hrt[:, 1])], dim=1), True
    return hrt[:, 1:], False


class SoftmaxLoss(TripleLoss):
    """The 1-N cross-entropy in both directions, over all entities (unfiltered)."""

    name = "softmax"
    scores_all_entities = True
    training_losses = frozenset({"crossentropy", "crossentropyloss", "softmax", "softmaxcrossentropy", "nssa"})

    def __call__(self, model, hrt: torch.Tensor) -> torch.Tensor:
        tail = F.cross_entropy(model.score_t(hrt[:, :2]), hrt[:, 2], reduction="none")
        batch, inverse = head_queries(model, hrt)
        head_scores = model.score_t(batch) if inverse else model.score_h(batch)
        return tail + F.cross_entropy(head_scores, hrt[:, 0], reduction="none")

    def fast_unsupported(self, model) -> str | None:
        return softmax_unsupported(model)

    def candidate_tables(self, model) -> dict[str, int]:
        heads, tails = entity_slots(model)
        return {table_name("entity_representations", i): i for i in sorted({*tails, *heads})}

    def fast_objective(self, model, hrt: torch.Tensor) -> tuple[torch.Tensor, Candidates]:
        """``sum_k sum_i <q_k,i, sum_e delta_k,e x_e,i>`` with ``delta`` held fixed, whose gradient in every
        query-side parameter is the loss's (``q`` keeps its graph).

        :param hrt: shape: (B, 3), internal ids
        :return: the scalar to differentiate, and per direction (delta (B, E), {table index: q (B, D)})
        """
        directions = softmax_directions(model, hrt)
        total, candidates = 0.0, []
        for (scores, queries), query, target in zip(
            linear_queries(model, directions), directions.queries, directions.targets
        ):
            tables = {i: embedding_table(model.entity_representations[i]).detach() for i in queries}
            # triples that share a query (h, r) share its scores: the two (U, E) products run once per query
            first, inverse = distinct_queries(query)
            full = None  # (U, E): every candidate's score, summed over the candidate tables without a copy
            for i, q in queries.items():
                q_u = q.detach() if first is None else q.detach()[first]
                full = q_u @ tables[i].T if full is None else full.addmm_(q_u, tables[i].T)
            _check_scores(model, full, inverse, scores, target, queries, tables)
            probs = torch.softmax(full, dim=1)  # (U, E)
            del full
            # sum_e delta_e x_e = sum_e softmax_e x_e - x_target, per table
            means = {i: probs @ tables[i] for i in queries}
            delta = probs if inverse is None else probs[inverse]  # (B, E); probs is not read again
            delta[torch.arange(delta.shape[0], device=delta.device), target] -= 1.0
            total = total + sum(
                (q * ((means[i] if inverse is None else means[i][inverse]) - tables[i][target])).sum()
                for i, q in queries.items()
            )
            candidates.append((delta, {i: q.detach() for i, q in queries.items()}))
        return total, candidates


def distinct_queries(query: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The first row of each distinct query, and each row's distinct query; ``(None, None)`` when all differ.

    :param query: shape: (B, 2), e.g. ``(h, r)`` pairs
    :return: ``first`` (U,) rows of ``query``, and ``inverse`` (B,) positions in ``first``
    """
    distinct, inverse = torch.unique(query, dim=0, return_inverse=True)
    if distinct.shape[0] == query.shape[0]:
        return None, None
    rows = torch.arange(query.shape[0], device=query.device)
    first = torch.full((distinct.shape[0],), query.shape[0], dtype=torch.long, device=query.device)
    return first.scatter_reduce_(0, inverse, rows, "amin"), inverse


def _check_scores(model, full, inverse, scores, target, queries, tables) -> None:
    """Refuse scores that overflow, or that are not linear in the candidate (``full`` must hold the model's own
    score of the true candidate).

    :param full: shape: (U, E), every candidate's score per distinct query; ``inverse`` (B,) or None
    :param scores: shape: (B,), the model's scores of the true triples; ``target`` (B,)
    """
    rows = torch.arange(target.shape[0], device=target.device) if inverse is None else inverse
    expected = full[rows, target]
    scale = sum((q.detach() * tables[i][target]).abs().sum(dim=1) for i, q in queries.items())
    # one pass finds any inf or nan among the scores (the extremes are then not finite; nan propagates)
    extremes = torch.stack(torch.aminmax(full))
    if not (bool(torch.isfinite(extremes).all()) and bool(torch.isfinite(scores).all())):
        raise KGTracinError(
            f"{type(model).__name__}: the model's scores overflow (they are not finite): its "
            "weights are too large for the compute precision"
        )
    if not bool(((scores.detach() - expected).abs() <= torch.finfo(full.dtype).eps ** 0.5 * (1.0 + scale)).all()):
        raise KGTracinError(
            f"{type(model).__name__}: scores are not linear in the candidate entity, so "
            "method='fast' cannot take loss='softmax'; use method='vmap'"
        )


def softmax_unsupported(model) -> str | None:
    """Why the closed form cannot take this model's ``softmax`` loss, or None when it can."""
    from pykeen.nn.representation import Embedding

    interaction = type(model.interaction).__name__
    if interaction not in _TAIL_LINEAR:
        return f"{interaction} scores are not linear in the candidate tail"
    if not model.use_inverse_triples and interaction not in _HEAD_LINEAR:
        return f"{interaction} scores are not linear in the candidate head (train with inverse triples)"
    heads, tails = entity_slots(model)
    for i in {*tails, *heads}:
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
    heads, tails = entity_slots(model)
    batch, inverse = head_queries(model, internal)
    return SoftmaxDirections(
        queries=[internal[:, :2], batch],
        head_side=[False, not inverse],
        targets=[internal[:, 2], internal[:, 0]],
        candidates=[tails, tails if inverse else heads],
    )


def candidate_leaf(model, index: int, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A leaf holding ``upstream`` in storage layout, and its view as the representation's output.

    :param upstream: shape: (B, D), e.g. the rows of the true candidates
    :return: the leaf (B, D) and the representation-shaped tensor (B, *shape), complex where the table is
    """
    rep = model.entity_representations[index]
    leaf = upstream.detach().contiguous().requires_grad_(True)
    if rep.is_complex:
        return leaf, torch.view_as_complex(leaf.view(leaf.shape[0], *row_shape(rep)))
    return leaf, leaf.view(leaf.shape[0], *row_shape(rep))


def surrogate_scores(model, directions: SoftmaxDirections, upstreams: list[dict[int, torch.Tensor]]):
    """Score ``s(q, u)`` per direction, with the candidate slot a leaf holding ``u``.

    :param upstreams: per direction, representation index -> ``u`` (B, D) in storage layout
    :return: per direction the scores (B,) and the candidate leaves {representation index: leaf (B, D)}
    """
    out = []
    for query, head_side, candidates, upstream in zip(
        directions.queries, directions.head_side, directions.candidates, upstreams
    ):
        leaves, cand = {}, []
        for i in candidates:
            leaves[i], x = candidate_leaf(model, i, upstream[i])
            cand.append(x)
        rel_index = query[:, 0] if head_side else query[:, 1]
        ent_index = query[:, 1] if head_side else query[:, 0]
        other_slot = entity_slots(model)[1 if head_side else 0]
        entity = [model.entity_representations[i](indices=ent_index) for i in other_slot]
        relation = [rep(indices=rel_index) for rep in model.relation_representations]
        squeeze = lambda xs: xs[0] if len(xs) == 1 else xs
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
    upstreams = [
        {i: embedding_table(model.entity_representations[i]).detach()[target] for i in candidates}
        for target, candidates in zip(directions.targets, directions.candidates)
    ]
    out = []
    for scores, leaves in surrogate_scores(model, directions, upstreams):
        queries = torch.autograd.grad(scores.sum(), list(leaves.values()), create_graph=True)
        out.append((scores, dict(zip(leaves, queries))))
    return out


def query_order(triples: torch.Tensor) -> torch.Tensor:
    """An order of the triples in which consecutive ones share queries: by ``(r, t)`` where the head-prediction
    queries are fewer than the tail-prediction ones, else by ``(h, r)``. Triples that share a query share the
    1-N loss's (query x entities) products within a batch (:func:`distinct_queries`); the order changes no value.

    :param triples: shape: (n, 3)
    :return: shape: (n,), a permutation
    """
    heads = torch.unique(triples[:, 1:], dim=0).shape[0] if triples.numel() else 0
    tails = torch.unique(triples[:, :2], dim=0).shape[0] if triples.numel() else 0
    columns = (1, 2, 0) if heads < tails else (0, 1, 2)
    order = torch.arange(triples.shape[0], device=triples.device)
    for column in reversed(columns):  # a stable sort by the last key first
        order = order[torch.argsort(triples[order, column], stable=True)]
    return order


LOSS = SoftmaxLoss
