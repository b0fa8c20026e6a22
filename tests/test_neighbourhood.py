"""``candidates="neighbourhood"``: the exact top-k among the training triples that share an entity with the test
triple, checked against the full score matrix masked in the test."""

from __future__ import annotations

import pytest
import torch

from kgtracin import TracIn
from kgtracin.errors import KGTracinError
from kgtracin.runs import load_run

from .conftest import assert_exact


def _masked_reference(scores: torch.Tensor, train: torch.Tensor, test: torch.Tensor, k: int, largest: bool):
    """Per test triple, by plain sorting: the k best influences among its neighbours, ties to the smaller row."""
    values, indices = [], []
    for j, (h, _, t) in enumerate(test.tolist()):
        rows = [i for i, (a, _, b) in enumerate(train.tolist()) if {a, b} & {h, t}]
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
        values, indices = _masked_reference(full, run.training_triples, test, k, largest)
        assert torch.equal(top.indices, indices)
        finite = torch.isfinite(values)
        assert torch.equal(torch.isfinite(top.scores), finite)
        assert_exact(top.scores[finite], values[finite])


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
