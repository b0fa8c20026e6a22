"""How well a training triple fits the rest of the graph, with no model: the ``consistency`` detector.

A triple gives its head a *role* (its relation, as head), its tail another (the relation, as tail), and links its
two entities by its relation in one direction. The graph says which roles go together: entities that are the tail of
``hypernym`` are also heads of ``hypernym``; a pair linked one way by a symmetric relation is linked the other way by
it too. A fake made by putting a random entity in a real triple's place gives that entity a role that its other roles
rarely come with; a fake made by replacing a real triple's relation links a pair by two relations that rarely link
one pair. Both are *surprises* given what else the graph says of the entity or the pair:

    role(e, a) = -log max_b (n(b, a) + 0.1) / (n(b) + 1)          over the other roles b of entity e
    pair(h, r, t) = -log max_b P(r | b) / P(r)                      over the other facts b between h and t
    consistency(h, r, t) = role(h, (r, head)) + role(t, (r, tail)) + pair(h, r, t)

with ``n(b)`` the entities with role b and ``n(b, a)`` those with both, ``P(r | b)`` the share of the b-facts
beside which the graph holds an r-fact in the same direction (smoothed towards ``P(r)``, the share of all facts
that are r-facts). The counts leave the triple itself out, so that a triple never vouches for itself, and count
copies of a triple once. A self-loop gives its entity one role of its own, ``(r, loop)``. An entity with no other
role, or a pair with no other fact, adds 0: the graph says nothing there. A pair's relation is measured against
its base rate (a *lift*), since most pairs have one fact and a pair with two that go together (a symmetric
relation both ways) is more credible than one with a single fact, not less.

It reads the training triples only, in a few vectorised passes. Besides a few tensors the size of the triples, it
holds two tables of (relations x relations) counts, and its time grows with the sum, over entities and pairs, of
the squared number of their roles (the pairs of roles are expanded in chunks of bounded size).
"""

from __future__ import annotations

import torch

from .errors import KGTracinError

__all__ = [
    "consistency_scores",
    "role_surprise",
    "pair_surprise",
    "multiplicity_surprise",
    "ROLE_SMOOTHING",
    "PAIR_SMOOTHING",
]

#: added to a role's co-occurrence count (and 1 to its entity count): a role never seen beside another is
#: surprising, not impossible
ROLE_SMOOTHING = 0.1
#: pseudo-pairs at the base rate that each conditional share of a pair's relations starts from
PAIR_SMOOTHING = 1.0
#: (target, other) item pairs expanded at once
_CHUNK = 1 << 22


def consistency_scores(training_triples: torch.Tensor) -> torch.Tensor:
    """``role surprise + pair surprise`` of each training triple (:func:`role_surprise`, :func:`pair_surprise`).

    :param training_triples: shape: (N, 3), dtype: long
    :return: shape: (N,), float64, higher is more suspicious; 0 where neither entity has another role and no other
        relation links the pair
    """
    return role_surprise(training_triples) + pair_surprise(training_triples)


def role_surprise(training_triples: torch.Tensor) -> torch.Tensor:
    """``role(h, (r, head)) + role(t, (r, tail))`` per triple: how rarely the entities with the head's other roles
    are heads of r, best over those roles, and likewise for the tail (module docstring). A self-loop ``(e, r, e)``
    gives e the role ``(r, loop)`` and scores ``role(e, (r, loop))``. Copies of a triple count once.

    :param training_triples: shape: (N, 3), dtype: long
    :return: shape: (N,), float64, >= 0
    """
    facts, row_fact = _facts(training_triples)
    if facts.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    head, relation, tail = facts.unbind(1)
    loop = head == tail
    # one row per (entity, role): (r, head) = 3r, (r, tail) = 3r + 1, (r, loop) = 3r + 2, once per self-loop
    entity = torch.cat([head, tail[~loop]])
    role = torch.cat([3 * relation + 2 * loop.long(), 3 * relation[~loop] + 1])
    sides = _role_surprise(entity, role)
    out = sides[: facts.shape[0]].clone()
    out[~loop] += sides[facts.shape[0] :]
    return out[row_fact]


def pair_surprise(training_triples: torch.Tensor) -> torch.Tensor:
    """``pair(h, r, t)`` per triple: how much less often the other facts between h and t come with an r-fact
    between them, in this direction, than r-facts come at all, best over those facts (module docstring).

    The rule ``b(x, y) -> a(x, y)`` (or ``-> a(y, x)``, the opposite direction) has confidence ``n(b -> a) / n(b)``:
    the share of b-facts beside which the graph holds the a-fact. A fact's score is ``-log`` of the best lift
    ``confidence / P(a)`` over the rules its pair's other facts give it, ``P(a)`` the share of facts that are
    a-facts; the fact itself left out of ``n(b -> a)``, and the confidence smoothed towards ``P(a)`` by
    ``PAIR_SMOOTHING`` pseudo-facts. Copies of a triple count once; a self-loop's pair is its entity alone.

    :param training_triples: shape: (N, 3), dtype: long
    :return: shape: (N,), float64; 0 where no other fact links the pair, negative where one makes r likelier
        than its base rate (the reversal of a symmetric relation's fact)
    """
    facts, row_fact = _facts(training_triples)
    if facts.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    head, relation, tail = facts.unbind(1)
    _, pair = torch.unique(
        torch.stack([torch.minimum(head, tail), torch.maximum(head, tail)], 1), dim=0, return_inverse=True
    )
    order = torch.argsort(pair, stable=True)  # one pair's facts side by side
    head, relation = head[order], relation[order]
    num_relations, num_facts = int(relation.max()) + 1, facts.shape[0]
    facts_of = torch.bincount(relation, minlength=num_relations).double()  # n(b)
    base = facts_of / num_facts  # P(a): the fact itself left out, and one pseudo-fact back
    size_of, start_of = _bags(pair[order])
    # n(b -> a) per direction (1: the same as b's, 0: opposite): one count per (b-fact, a-fact) beside it
    rule = torch.zeros(num_relations * num_relations * 2, dtype=torch.float64)

    def keys(targets, others):
        same = (head[others] == head[targets]).long()
        return (relation[others] * num_relations + relation[targets]) * 2 + same

    for targets, others in _within_bags(size_of, start_of):
        rule.index_add_(0, keys(targets, others), torch.ones(targets.numel(), dtype=torch.float64))
    best = torch.full((num_facts,), -torch.inf, dtype=torch.float64)
    for targets, others in _within_bags(size_of, start_of):
        a, b = relation[targets], relation[others]
        # the fact itself left out: its (b-fact, a-fact) pair; where b is a, also the pair it makes as a b-fact
        # beside the other, and itself among the b-facts
        same_relation = (a == b).double()
        support = rule[keys(targets, others)] - 1 - same_relation
        confidence = (support + PAIR_SMOOTHING * base[a]) / (facts_of[b] - same_relation + PAIR_SMOOTHING)
        best.scatter_reduce_(0, targets, confidence / base[a], "amax")
    surprise = torch.zeros(num_facts, dtype=torch.float64)
    surprise[order] = torch.where(torch.isinf(best), torch.zeros_like(best), -best.log())
    return surprise[row_fact]


def multiplicity_surprise(training_triples: torch.Tensor) -> torch.Tensor:
    """How rarely the other heads of r that have as many tails but one have one more, and likewise for tails:

        multiplicity(h, r, t) = m(k) + m(k'),   m(k) = -log (A(k) - 1 + s) / (A(k - 1) - 1 + 1)  for k > 1, else 0

    with k the tails of ``(h, r)`` (this fact included), ``A(k)`` the heads of r with at least k tails (h among them,
    left out), ``s = ROLE_SMOOTHING``, and k' and its counts for the tail's heads. A relation whose heads have one
    tail each (a concept's one parent) makes a second tail surprising, the fake one and the real one alike: this is
    a cue to be weighed with the others (:mod:`kgtracin.evaluation.learned`), not a detector alone. Copies of a
    triple count once.

    :param training_triples: shape: (N, 3), dtype: long
    :return: shape: (N,), float64, >= 0
    """
    facts, row_fact = _facts(training_triples)
    if facts.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    out = torch.zeros(facts.shape[0], dtype=torch.float64)
    for anchor in (facts[:, [0, 1]], facts[:, [2, 1]]):
        anchors, of_fact, count = torch.unique(anchor, dim=0, return_inverse=True, return_counts=True)
        relation, most = anchors[:, 1], int(count.max())
        # at_least[r, k]: anchors of relation r with at least k facts
        at_least = torch.zeros(int(relation.max()) + 1, most + 2, dtype=torch.float64)
        at_least.index_put_((relation, count), torch.ones(count.shape[0], dtype=torch.float64), accumulate=True)
        at_least = at_least.flip(1).cumsum(1).flip(1)
        k, r = count[of_fact], facts[:, 1]
        share = (at_least[r, k] - 1 + ROLE_SMOOTHING) / at_least[r, k - 1]
        out += torch.where(k > 1, -share.log(), torch.zeros_like(share))
    return out[row_fact]


def _facts(training_triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct facts of the checked triples (:func:`_checked`), shape (F, 3), and each row's fact, shape (N,)."""
    return torch.unique(_checked(training_triples), dim=0, return_inverse=True)


def _checked(training_triples: torch.Tensor) -> torch.Tensor:
    if training_triples.dim() != 2 or training_triples.shape[1] != 3:
        shape = tuple(training_triples.shape)
        raise KGTracinError(f"consistency: training triples must be of shape (N, 3), got {shape}")
    dtype = training_triples.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise KGTracinError("consistency: training triples must hold integer ids")
    if training_triples.numel() and int(training_triples.min()) < 0:
        raise KGTracinError("consistency: training triples hold a negative id")
    triples = training_triples.long().clone()
    # relations numbered 0..R-1 in their order: the count tables are (R x R) whatever the ids
    triples[:, 1] = torch.unique(triples[:, 1], return_inverse=True)[1]
    return triples


def _role_surprise(entity: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
    """Each row's ``-log max_b (n(b, a) + s) / (n(b) + 1)`` over the other roles b of its entity, a its role.

    ``n(b)`` entities hold role b, ``n(b, a)`` both b and a. A row's own entity counts towards ``n(b, a)`` only where
    another row gives the entity role a too (the entity in that role in another fact), so that no row vouches for
    itself.

    :param entity: shape: (M,), dtype: long
    :param role: shape: (M,), dtype: long
    :return: shape: (M,), float64, 0 for a row whose entity holds no other role
    """
    if entity.numel() == 0:
        return torch.zeros(0, dtype=torch.float64)
    num_roles = int(role.max()) + 1
    held, row_entry, multiplicity = torch.unique(
        torch.stack([entity, role], 1), dim=0, return_inverse=True, return_counts=True
    )  # held: (E, 2), the distinct (entity, role) entries, sorted by entity
    entry_role = held[:, 1]
    own = (multiplicity == 1).double()  # the entry rests on one row: that row leaves its entity's role out
    having = torch.bincount(entry_role, minlength=num_roles).double()  # n(b)
    size_of, start_of = _bags(held[:, 0])
    both = torch.zeros(num_roles * num_roles, dtype=torch.float64)
    for targets, others in _within_bags(size_of, start_of):
        both.index_add_(0, entry_role[others] * num_roles + entry_role[targets], torch.ones(targets.numel()).double())
    both = both.view(num_roles, num_roles)  # both[b, a] = n(b, a), b != a
    best = torch.full((held.shape[0],), -torch.inf, dtype=torch.float64)
    for targets, others in _within_bags(size_of, start_of):
        b, a = entry_role[others], entry_role[targets]
        share = (both[b, a] - own[targets] + ROLE_SMOOTHING) / (having[b] + 1.0)
        best.scatter_reduce_(0, targets, share, "amax")
    surprise = torch.where(torch.isinf(best), torch.zeros_like(best), -best.log())
    return surprise[row_entry]


def _bags(bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per entry of a sorted bag vector: its bag's size and the index of its bag's first entry."""
    _, size = torch.unique_consecutive(bag, return_counts=True)
    start = torch.cumsum(size, 0) - size
    return torch.repeat_interleave(size, size), torch.repeat_interleave(start, size)


def _within_bags(size_of: torch.Tensor, start_of: torch.Tensor):
    """Every (target, other) pair of entries of one bag, other != target, about ``_CHUNK`` pairs at a time.

    :return: an iterator of two index tensors of one length
    """
    total = size_of.numel()
    step = max(1, _CHUNK // int(size_of.max()))
    for first in range(0, total, step):
        chunk = torch.arange(first, min(total, first + step))
        count = size_of[chunk]
        targets = torch.repeat_interleave(chunk, count)
        offset = torch.arange(targets.numel()) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        others = start_of[targets] + offset
        keep = others != targets
        yield targets[keep], others[keep]
