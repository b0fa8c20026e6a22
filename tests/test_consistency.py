"""The model-free ``consistency`` detector: role and pair surprise, against an independent count-by-count
reference, and the properties the scores must keep (relabelling, row order, reversing every triple)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kgtracin import consistency
from kgtracin.consistency import (
    PAIR_SMOOTHING,
    ROLE_SMOOTHING,
    consistency_scores,
    multiplicity_surprise,
    pair_surprise,
    role_surprise,
)
from kgtracin.errors import KGTracinError


def _reference_role(rows: list[tuple[int, int, int]]) -> list[float]:
    """One fact at a time, with Counters: the role surprise of the head plus that of the tail (a self-loop: one
    role of its own)."""
    facts = sorted(set(rows))
    roles: dict[int, Counter] = defaultdict(Counter)

    def sides(h, r, t):
        return [(h, (r, "loop"))] if h == t else [(h, (r, "head")), (t, (r, "tail"))]

    for fact in facts:
        for entity, role in sides(*fact):
            roles[entity][role] += 1
    having, both = Counter(), Counter()
    for held in roles.values():
        for a in held:
            having[a] += 1
            for b in held:
                if a != b:
                    both[b, a] += 1

    def surprise(entity, role):
        own = 1 if roles[entity][role] == 1 else 0
        others = [b for b in roles[entity] if b != role]
        if not others:
            return 0.0
        return -math.log(max((both[b, role] - own + ROLE_SMOOTHING) / (having[b] + 1) for b in others))

    score = {fact: sum(surprise(entity, role) for entity, role in sides(*fact)) for fact in facts}
    return [score[row] for row in rows]


def _reference_pair(rows: list[tuple[int, int, int]]) -> list[float]:
    """One fact at a time, counted in the graph without it: the best lift of its relation under the rules its
    pair's other facts give it (``b(x, y) -> a(x, y)`` or ``-> a(y, x)``), with one pseudo-fact of its relation
    put back in the base rate."""
    facts = sorted(set(rows))
    score = {}
    for fact in facts:
        h, a, t = fact
        rest = [f for f in facts if f != fact]
        beside = defaultdict(list)
        for other in rest:
            beside[frozenset((other[0], other[2]))].append(other)
        count = Counter(r for _, r, _ in rest)
        siblings = beside[frozenset((h, t))]
        if not siblings:
            score[fact] = 0.0
            continue
        base = (count[a] + 1) / (len(rest) + 1)
        lifts = []
        for bh, b, _ in siblings:
            same = bh == h
            # the b-facts beside which the graph (without the fact) holds an a-fact in the same direction
            held = sum(
                1
                for b_fact in rest
                if b_fact[1] == b
                for o in beside[frozenset((b_fact[0], b_fact[2]))]
                if o != b_fact and o[1] == a and (o[0] == b_fact[0]) == same
            )
            lifts.append((held + PAIR_SMOOTHING * base) / (count[b] + PAIR_SMOOTHING) / base)
        score[fact] = -math.log(max(lifts))
    return [score[row] for row in rows]


def _reference_multiplicity(rows: list[tuple[int, int, int]]) -> list[float]:
    """One fact at a time: among the other heads of its relation with k - 1 tails or more, the share with k or
    more (k: its head's tails), and likewise for its tail's heads."""
    facts = set(rows)
    score = {}
    for fact in facts:
        total = 0.0
        for side in (0, 2):
            anchor = (fact[side], fact[1])
            per_anchor = Counter((f[side], f[1]) for f in facts if f[1] == fact[1])
            k = per_anchor[anchor]
            if k > 1:
                others = [n for a, n in per_anchor.items() if a != anchor]
                total -= math.log(
                    (sum(n >= k for n in others) + ROLE_SMOOTHING) / (sum(n >= k - 1 for n in others) + 1)
                )
        score[fact] = total
    return [score[row] for row in rows]


_graphs = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 3), st.integers(0, 7)), min_size=0, max_size=60)


@settings(max_examples=150, deadline=None)
@given(_graphs)
def test_role_and_pair_surprise_agree_with_a_count_by_count_reference(rows):
    triples = torch.tensor(rows, dtype=torch.long).view(-1, 3)
    role, pair = role_surprise(triples), pair_surprise(triples)
    assert role.dtype == pair.dtype == torch.float64 and role.shape == pair.shape == (len(rows),)
    torch.testing.assert_close(role, torch.tensor(_reference_role(rows), dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(pair, torch.tensor(_reference_pair(rows), dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(consistency_scores(triples), role + pair, rtol=0, atol=0)
    assert (role >= 0).all()
    multiplicity = multiplicity_surprise(triples)
    expected = torch.tensor(_reference_multiplicity(rows), dtype=torch.float64)
    torch.testing.assert_close(multiplicity, expected, rtol=0, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(_graphs, st.randoms(use_true_random=False))
def test_scores_do_not_depend_on_ids_row_order_or_the_direction_of_every_triple(rows, rnd):
    triples = torch.tensor(rows, dtype=torch.long).view(-1, 3)
    entities, relations = list(range(8)), list(range(4))
    rnd.shuffle(entities)
    rnd.shuffle(relations)
    order = list(range(len(rows)))
    rnd.shuffle(order)
    relabelled = torch.tensor(
        [(entities[rows[i][0]] + 20, relations[rows[i][1]] + 5, entities[rows[i][2]] + 20) for i in order],
        dtype=torch.long,
    ).view(-1, 3)
    reversed_ = triples[:, [2, 1, 0]]  # every head and tail swapped: roles and directions are relabelled, no more
    for function in (consistency_scores, multiplicity_surprise):
        scores = function(triples)
        torch.testing.assert_close(function(relabelled), scores[order], rtol=0, atol=1e-12)
        torch.testing.assert_close(function(reversed_), scores, rtol=0, atol=1e-12)


def test_an_entity_or_pair_the_graph_says_nothing_else_of_adds_nothing():
    # entity 0 is only ever the head of relation 0; pair {0, 1} holds one relation
    triples = torch.tensor([[0, 0, 1], [2, 0, 1], [2, 1, 3]])
    role = role_surprise(triples)
    assert float(pair_surprise(triples).abs().max()) == 0.0
    # the first triple: head 0 has no other role (0); tail 1 has no other role (0)
    assert float(role[0]) == 0.0
    # the third: of the two heads of relation 0 (entities 0 and 2) none but 2 itself heads relation 1 too;
    # its tail, 3, has no other role
    assert float(role[2]) == pytest.approx(-math.log(ROLE_SMOOTHING / 3), abs=1e-12)


def test_a_fake_relation_on_a_linked_pair_is_surprising_and_a_symmetric_one_is_credible():
    # relation 0 is symmetric: every pair it links, it links both ways; relation 1 links pairs once
    symmetric = [[2 * i, 0, 2 * i + 1] for i in range(10)] + [[2 * i + 1, 0, 2 * i] for i in range(10)]
    single = [[20 + i, 1, 40 + i] for i in range(10)]
    fake = [[0, 1, 1]]  # relation 1 on a pair relation 0 links
    scores = pair_surprise(torch.tensor(symmetric + single + fake))
    assert float(scores[-1]) > 1.0  # relation 1 never comes with relation 0 elsewhere
    assert (scores[2:20] < 0).all()  # each untouched symmetric fact is made likelier by its reversal
    assert (scores[20:30] == 0).all()  # nothing else links those pairs


def test_copies_of_a_triple_count_once_and_a_lone_triple_never_vouches_for_itself():
    lone = torch.tensor([[0, 0, 1], [0, 1, 2]])
    copied = torch.tensor([[0, 0, 1], [0, 1, 2], [0, 1, 2]])
    # head 0's role in relation 1 is seen with relation 0 only because of this very triple, copies or not
    assert float(role_surprise(lone)[1]) == pytest.approx(-math.log(ROLE_SMOOTHING / 2), abs=1e-12)
    for function in (role_surprise, pair_surprise, multiplicity_surprise):
        assert function(copied).tolist() == function(lone).tolist() + [function(lone)[1].item()]


def test_a_self_loop_gives_its_entity_one_role_of_its_own():
    assert role_surprise(torch.tensor([[0, 0, 0]])).tolist() == [0.0]  # nothing else is said of entity 0
    for function in (pair_surprise, multiplicity_surprise):
        assert function(torch.tensor([[0, 0, 0]])).tolist() == [0.0]
    # entity 1 is the head of relation 0 elsewhere; no other entity loops on relation 0
    scores = role_surprise(torch.tensor([[1, 0, 1], [1, 0, 2], [3, 0, 4]]))
    assert float(scores[0]) == pytest.approx(-math.log(ROLE_SMOOTHING / 3), abs=1e-12)


def test_relation_ids_are_only_names():
    small = torch.tensor([[0, 0, 1], [1, 0, 0], [1, 1, 2], [2, 1, 3]])
    huge = small.clone()
    huge[:, 1] = torch.tensor([10**9, 10**9, 7, 7])
    for function in (role_surprise, pair_surprise, multiplicity_surprise):
        torch.testing.assert_close(function(huge), function(small), rtol=0, atol=0)


def test_the_chunked_pass_equals_one_pass(monkeypatch):
    generator = torch.Generator().manual_seed(3)
    triples = torch.randint(0, 12, (300, 3), generator=generator)
    triples[:, 1] %= 4
    whole = consistency_scores(triples)
    for chunk in (7, 50, 97):  # one target per chunk, then several
        monkeypatch.setattr(consistency, "_CHUNK", chunk)
        torch.testing.assert_close(consistency_scores(triples), whole, rtol=0, atol=0)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(3, 2, dtype=torch.long), "shape"),
        (torch.zeros(3, dtype=torch.long), "shape"),
        (torch.zeros(3, 3), "integer ids"),
        (torch.zeros(3, 3, dtype=torch.bool), "integer ids"),
        (torch.zeros(3, 3, dtype=torch.complex64), "integer ids"),
        (torch.tensor([[0, -1, 1]]), "negative id"),
    ],
)
def test_bad_triples_are_refused_in_one_line(bad, message):
    for function in (role_surprise, pair_surprise, consistency_scores, multiplicity_surprise):
        with pytest.raises(KGTracinError, match=message):
            function(bad)


def test_a_second_parent_where_every_other_entity_has_one_is_surprising():
    # relation 0: entities 0..9 have one parent each (10); entity 11 has two (10 and 12)
    triples = torch.tensor([[i, 0, 10] for i in range(10)] + [[11, 0, 10], [11, 0, 12]])
    scores = multiplicity_surprise(triples)
    second_parent = -math.log(ROLE_SMOOTHING / 11)  # none of the 10 other heads (with 1 tail or more) has 2
    eleventh_child = -math.log(ROLE_SMOOTHING / 1)  # the other tail (12) has fewer than 10 heads
    assert float(scores[-1]) == pytest.approx(second_parent, abs=1e-12)  # tail 12 has one head: 0 there
    assert float(scores[-2]) == pytest.approx(second_parent + eleventh_child, abs=1e-12)
    torch.testing.assert_close(scores[:10], torch.full((10,), eleventh_child, dtype=torch.float64), rtol=0, atol=1e-12)
