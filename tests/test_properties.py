"""Property-based tests (hypothesis) of the parts with many edge cases, each against a reference written here:
the top-k sink with ties, blocks and shards (against ``sorted()``), the row kernel (against dense gradients), the
TSV reader (against the text it was written from) and label mapping (round trips)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgtracin import KGTracinError
from kgtracin.gradients._factors import RowGroup
from kgtracin.scoring import TopKSink
from kgtracin.triples import Labels, read_labeled_triples, read_triple_ids, write_labeled_triples

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _sorted_choice(row: list[float], k: int, largest: bool) -> tuple[list[float], list[int]]:
    """The k best (value, index) of a row by plain sorting: best value first, ties to the smaller index."""
    order = sorted(range(len(row)), key=lambda i: (-row[i] if largest else row[i], i))[:k]
    return [row[i] for i in order], order


@st.composite
def _score_stream(draw):
    num_test = draw(st.integers(1, 4))
    num_train = draw(st.integers(1, 40))
    values = st.integers(-3, 3).map(float)  # few distinct values: many ties
    scores = draw(
        st.lists(st.lists(values, min_size=num_train, max_size=num_train), min_size=num_test, max_size=num_test)
    )
    k = draw(st.integers(1, num_train + 2))
    cuts = sorted(draw(st.sets(st.integers(1, num_train - 1), max_size=6))) if num_train > 1 else []
    blocks = list(zip([0, *cuts], [*cuts, num_train]))
    order = draw(st.permutations(blocks))
    shards = draw(st.booleans())
    return scores, k, order, shards


@SETTINGS
@given(_score_stream())
def test_top_k_sink_is_sorted_selection(stream):
    """Blocks in any order, fed to one sink or to one sink per block merged, select what sorting selects."""
    scores, k, blocks, shards = stream
    matrix = torch.tensor(scores, dtype=torch.float64)
    num_test, num_train = matrix.shape
    sink = TopKSink(num_test, k, torch.float64)
    for start, stop in blocks:
        if shards:
            part = TopKSink(num_test, k, torch.float64)
            part.add(start, matrix[:, start:stop])
            sink.merge(part)
        else:
            sink.add(start, matrix[:, start:stop])
    for row in range(num_test):
        for largest, values, indices in (
            (True, sink.top_values, sink.top_indices),
            (False, sink.bottom_values, sink.bottom_indices),
        ):
            expected_values, expected_indices = _sorted_choice(scores[row], min(k, num_train), largest)
            assert values[row].tolist() == expected_values
            assert indices[row].tolist() == expected_indices


@st.composite
def _row_groups(draw):
    rows = draw(st.integers(1, 6))
    slots = draw(st.integers(1, 3))
    dim = draw(st.integers(1, 4))
    sizes = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    groups = []
    for size in sizes:
        index = torch.randint(0, rows, (size, slots), generator=generator)
        grads = torch.randn(size, slots, dim, generator=generator, dtype=torch.float64)
        groups.append(RowGroup(index, grads))
    return rows, groups


def _dense(group: RowGroup, rows: int) -> torch.Tensor:
    """Each triple's gradient of the whole table, built densely. Shape (B, rows * D)."""
    out = torch.zeros(group.index.shape[0], rows, group.grads.shape[-1], dtype=torch.float64)
    for b in range(group.index.shape[0]):
        for s in range(group.index.shape[1]):
            out[b, group.index[b, s]] += group.grads[b, s]
    return out.reshape(group.index.shape[0], -1)


@SETTINGS
@given(_row_groups(), st.sampled_from(["tiles", "buckets"]), st.booleans())
def test_row_kernel_is_the_dense_inner_product(groups, strategy, transposed):
    from kgtracin.gradients import row_kernel

    rows, (train, test) = groups
    expected = _dense(train, rows) @ _dense(test, rows).T
    saved = row_kernel.COST_PER_BUCKET, row_kernel.COST_PER_TILE
    try:  # force one strategy
        if strategy == "tiles":
            row_kernel.COST_PER_BUCKET = 1e9
        else:
            row_kernel.COST_PER_TILE = 1e9
        out = torch.zeros(test.size, train.size, dtype=torch.float64) if transposed else None
        if transposed:
            train.add_kernel(test, out, transposed=True)
            actual = out.T
        else:
            actual = train.kernel(test)
    finally:
        row_kernel.COST_PER_BUCKET, row_kernel.COST_PER_TILE = saved
    assert torch.allclose(actual, expected, rtol=1e-12, atol=1e-12)
    assert torch.allclose(train.self_kernel(), (_dense(train, rows) ** 2).sum(dim=1), rtol=1e-12, atol=1e-12)


# a label: any text without tab, newline or surrounding blanks (the reader strips fields), not empty
_LABEL = (
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\t\r\n\x0b\x0c\x1c\x1d\x1e\x85\ufeff"
        ),
        min_size=1,
        max_size=12,
    )
    .map(str.strip)
    .filter(bool)
)


@SETTINGS
@given(st.lists(st.tuples(_LABEL, _LABEL, _LABEL), min_size=1, max_size=20))
def test_tsv_round_trip(tmp_path_factory, triples):
    path = tmp_path_factory.mktemp("tsv") / "triples.tsv"
    write_labeled_triples(path, np.asarray(triples, dtype=object).reshape(-1, 3))
    assert [tuple(row) for row in read_labeled_triples(path).tolist()] == triples


@SETTINGS
@given(
    st.lists(st.tuples(_LABEL, _LABEL, _LABEL), min_size=1, max_size=8),
    st.sampled_from(["", "\n", "\r\n", "\n\n"]),
    st.booleans(),
)
def test_tsv_reader_takes_line_ends_blank_lines_and_a_bom(tmp_path_factory, triples, end, bom):
    text = ("\ufeff" if bom else "") + "".join("\t".join(t) + "\n" for t in triples) + end
    path = tmp_path_factory.mktemp("tsv") / "triples.tsv"
    path.write_bytes(text.replace("\n", "\r\n" if end == "\r\n" else "\n").encode())
    assert [tuple(row) for row in read_labeled_triples(path).tolist()] == triples


@SETTINGS
@given(st.lists(st.tuples(_LABEL, _LABEL, _LABEL), min_size=1, max_size=8), st.integers(0, 7), st.integers(1, 5))
def test_tsv_reader_names_the_bad_line(tmp_path_factory, triples, where, columns):
    lines = ["\t".join(t) for t in triples]
    where = min(where, len(lines))
    if columns == 3:
        columns = 4
    lines.insert(where, "\t".join(["x"] * columns))
    path = tmp_path_factory.mktemp("tsv") / "triples.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(KGTracinError, match=f"line {where + 1}: expected 3 tab-separated columns"):
        read_labeled_triples(path)


@SETTINGS
@given(st.lists(st.tuples(_LABEL, _LABEL, _LABEL), min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_labels_round_trip_through_ids(tmp_path_factory, triples, random):
    entities = sorted({x for h, _, t in triples for x in (h, t)})
    relations = sorted({r for _, r, _ in triples})
    random.shuffle(entities)  # ids in any order: the map, not the sort, decides
    labels = Labels.from_maps({e: i for i, e in enumerate(entities)}, {r: i for i, r in enumerate(relations)})
    ids = labels.to_ids(triples)
    for (h, r, t), (hi, ri, ti) in zip(triples, ids.tolist()):
        assert (entities[hi], relations[ri], entities[ti]) == (h, r, t)
    assert [tuple(row) for row in labels.to_labels(ids).tolist()] == triples
    path = tmp_path_factory.mktemp("tsv") / "triples.tsv"
    write_labeled_triples(path, np.asarray(triples, dtype=object).reshape(-1, 3))
    assert torch.equal(read_triple_ids(path, labels), ids)


_QUERIES = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=30)


@given(_QUERIES)
@SETTINGS
def test_distinct_queries_point_each_row_at_its_first_copy(rows):
    from kgtracin.losses.softmax import distinct_queries

    query = torch.tensor(rows)
    first, inverse = distinct_queries(query)
    if len(set(rows)) == len(rows):
        assert first is None and inverse is None
        return
    assert first.shape[0] == len(set(rows))
    assert torch.equal(query[first][inverse], query)  # every row's query is its own
    assert [rows.index(rows[i]) for i in first.tolist()] == first.tolist()  # the first copy of each


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 3)), max_size=40))
@SETTINGS
def test_query_order_groups_the_queries_of_the_direction_with_fewer(rows):
    from kgtracin.losses.softmax import query_order

    triples = torch.tensor(rows, dtype=torch.long).view(-1, 3)
    order = query_order(triples)
    assert sorted(order.tolist()) == list(range(len(rows)))  # a permutation
    ordered = [tuple(row) for row in triples[order].tolist()]
    heads, tails = len({(r, t) for _, r, t in rows}), len({(h, r) for h, r, _ in rows})
    key = (lambda x: (x[1], x[2])) if heads < tails else (lambda x: (x[0], x[1]))
    keys = [key(x) for x in ordered]
    # each query's triples are consecutive: as many runs as distinct queries
    runs = sum(1 for a, b in zip([None, *keys], keys) if a != b)
    assert runs == len(set(keys))


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2), st.integers(0, 4)), min_size=1, max_size=30),
    st.randoms(use_true_random=False),
)
def test_support_is_the_count_of_shared_queries(rows, random):
    """The audit's ``support`` against counting by hand; a permutation of the rows permutes the scores."""
    from kgtracin.audit import support_scores

    triples = torch.tensor(rows)
    expected = [-np.log(sum(o[:2] == r[:2] for o in rows)) - np.log(sum(o[1:] == r[1:] for o in rows)) for r in rows]
    scores = support_scores(triples)
    assert torch.equal(scores, torch.tensor(expected, dtype=torch.float64))
    order = list(range(len(rows)))
    random.shuffle(order)
    assert torch.equal(support_scores(triples[order]), scores[order])
