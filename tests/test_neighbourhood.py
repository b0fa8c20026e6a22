"""``candidates="neighbourhood"``: the exact top-k among the training triples that share an entity with the test
triple, checked against the full score matrix masked in the test."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kgtracin import TracIn
from kgtracin.errors import KGTracinError
from kgtracin.runs import load_run

from .conftest import assert_exact


def _masked_reference(scores: torch.Tensor, train: torch.Tensor, test: torch.Tensor, k: int, largest: bool):
    """Per test triple, by plain sorting: the k best influences among its neighbours, ties to the smaller row."""
    values, indices = [], []
    for j in range(test.shape[0]):
        rows = near_rows(train, test[j])
        ranked = sorted(rows, key=lambda i: ((-1 if largest else 1) * float(scores[j, i]), i))[:k]
        values.append(
            [float(scores[j, i]) for i in ranked] + [float("-inf") if largest else float("inf")] * (k - len(ranked))
        )
        indices.append(ranked + [-1] * (k - len(ranked)))
    return torch.tensor(values, dtype=torch.float64), torch.tensor(indices)


@pytest.mark.parametrize(("model", "inverse", "loss"), [("DistMult", False, "softmax"), ("ConvE", True, "bce")])
def test_neighbourhood_is_the_masked_top_k(run_factory, model, inverse, loss):
    run = load_run(run_factory(model, inverse))
    test = run.splits["testing"][:6]
    options = {"loss": loss, "precision": "fp64", "progress": False, "batch_size": 64}
    full = TracIn(run.model, run.training_triples, run.checkpoints, **options).scores(test)
    near = TracIn(run.model, run.training_triples, run.checkpoints, candidates="neighbourhood", **options)
    k = 7
    result = near.influence(test, top_k=k)
    for top, largest in ((result.proponents, True), (result.opponents, False)):
        values, _ = _masked_reference(full, run.training_triples, test, k, largest)
        finite = torch.isfinite(values)
        assert torch.equal(torch.isfinite(top.scores), finite)
        assert torch.equal(top.indices == -1, ~finite)
        # the k best values, each the full matrix's entry of the row it names; rows differ from the reference's
        # only among values equal to rounding (symmetric facts tie exactly in exact arithmetic)
        assert_exact(top.scores[finite], values[finite])
        chosen = top.indices.clamp_min(0)
        assert_exact(top.scores[finite], full.gather(1, chosen)[finite])
        for j in range(test.shape[0]):
            named = top.indices[j][finite[j]].tolist()
            assert len(set(named)) == len(named)
            assert set(named) <= set(near_rows(run.training_triples, test[j]))


def near_rows(train: torch.Tensor, triple: torch.Tensor) -> list[int]:
    """The rows of ``train`` that share an entity with ``triple``."""
    h, _, t = triple.tolist()
    return [i for i, (a, _, b) in enumerate(train.tolist()) if {a, b} & {h, t}]


def test_neighbourhood_fills_short_lists_and_the_table_leaves_them_out(distmult_run):
    run = load_run(distmult_run)
    test = run.splits["testing"][:3]
    near = TracIn(run.model, run.training_triples, run.checkpoints, candidates="neighbourhood", progress=False)
    k = run.training_triples.shape[0]  # more than any neighbourhood
    result = near.influence(test, top_k=k)
    frame = result.to_frame()
    for j, (h, _, t) in enumerate(test.tolist()):
        rows = frame[frame["test_index"] == j]
        assert set(rows["train_index"]) <= {
            i for i, (a, _, b) in enumerate(run.training_triples.tolist()) if {a, b} & {h, t}
        }
        assert (result.proponents.indices[j] == -1).any()
    with pytest.raises(KGTracinError, match="store"):
        near.influence(test, top_k=3, store="somewhere")


def test_explain_cli_with_neighbourhood(distmult_run, tmp_path, capsys):
    """`kgtracin explain --candidates neighbourhood`: every proponent and opponent shares an entity with its test
    triple, the scores are the API's, and no store is left behind."""
    import pandas as pd

    from .test_cli import assert_clean_error, run_cli

    out = tmp_path / "near.tsv"
    args = ("explain", distmult_run, "--split", "test", "--limit", "4", "--top-k", "3")
    code, _, err = run_cli(capsys, *args, "--candidates", "neighbourhood", "--output", out)
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t", keep_default_na=False)
    assert len(frame) and all(
        {row.train_head, row.train_tail} & {row.test_head, row.test_tail} for row in frame.itertuples()
    )
    run = load_run(distmult_run)
    api = TracIn.from_run(distmult_run, candidates="neighbourhood", progress=False).influence(
        run.splits["testing"][:4], top_k=3
    )
    expected = api.to_frame(run.labels)
    assert frame["train_index"].tolist() == expected["train_index"].tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["near.tsv"]
    code, _, err = run_cli(
        capsys, *args, "--candidates", "neighbourhood", "--store", tmp_path / "s", "--output", tmp_path / "x.tsv"
    )
    assert_clean_error(code, err, "--store")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 2), st.integers(0, 6)), min_size=1, max_size=25),
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 2), st.integers(0, 8)), min_size=1, max_size=8),
)
def test_neighbourhood_pairs_are_every_touching_pair_once(train, test):
    """Self-loops, repeated triples, entities only on one side: the join gives exactly the touching pairs."""
    from kgtracin.runners.neighbourhood import neighbourhood_pairs

    rows, tests = neighbourhood_pairs(torch.tensor(train), torch.tensor(test))
    expected = sorted((i, j) for i, a in enumerate(train) for j, b in enumerate(test) if {a[0], a[2]} & {b[0], b[2]})
    assert list(zip(rows.tolist(), tests.tolist())) == expected


def test_a_prediction_without_neighbours_gets_only_fillers(distmult_run):
    """Training triples that never mention the test triples' entities: every entry is a filler, nothing scored."""
    run = load_run(distmult_run)
    test = run.splits["testing"][:2]
    ends = test[:, [0, 2]].reshape(-1)
    train = run.training_triples
    far = train[~(torch.isin(train[:, 0], ends) | torch.isin(train[:, 2], ends))]
    near = TracIn(run.model, far, run.checkpoints, candidates="neighbourhood", progress=False)
    result = near.influence(test, top_k=3)
    assert (result.proponents.indices == -1).all() and (result.opponents.indices == -1).all()
    assert result.to_frame().empty


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_sampled_products_are_the_pairs_products(dtype):
    """The pairs' direction products, sampled from the (A K, C L) product (float64) or gathered (half precision,
    which the sparse kernel does not take on every device)."""
    from kgtracin.gradients.candidates import sampled_products

    generator = torch.Generator().manual_seed(0)
    first = torch.randn(9, 2, 50, generator=generator, dtype=torch.float64)
    second = torch.randn(7, 3, 50, generator=generator, dtype=torch.float64)
    pairs = torch.randperm(9 * 7, generator=generator)[:40]
    i, j = pairs // 7, pairs % 7
    expected = torch.einsum("pke,ple->pkl", first[i], second[j])
    actual = sampled_products(first.to(dtype), second.to(dtype), i, j)
    assert actual.dtype == dtype and actual.shape == (40, 2, 3)
    if dtype == torch.float64:
        assert_exact(actual, expected)
    else:
        assert torch.allclose(actual.double(), expected, rtol=0.05, atol=0.5)
