"""The ``held_out`` detector: folds, the model that scores each triple, the ranks, and the CLI."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kgtracin.errors import KGTracinError
from kgtracin.evaluation import end_to_end
from kgtracin.evaluation.held_out import HeldOutConfig, folds_of, held_out_scores
from kgtracin.predictions import KnownTriples
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 300), st.integers(2, 12), st.integers(0, 2**31))
def test_folds_cover_every_triple_once_in_nearly_equal_sizes(n, folds, seed):
    folds = min(folds, n)
    triples = torch.stack([torch.arange(n), torch.zeros(n, dtype=torch.long), torch.arange(n) + 1], dim=1)
    fold = folds_of(triples, folds, seed)
    sizes = torch.bincount(fold, minlength=folds)
    assert fold.shape == (n,) and int(sizes.sum()) == n and sizes.shape == (folds,)
    assert int(sizes.max() - sizes.min()) <= 1
    assert torch.equal(fold, folds_of(triples, folds, seed))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=2, max_size=120), st.integers(2, 6), st.integers(0, 2**31))
def test_copies_of_a_triple_share_their_fold(codes, folds, seed):
    """A copy left in training would let the model see the triple it judges."""
    triples = torch.tensor([[c % 4, c // 8, (c // 4) % 2] for c in codes])
    fold = folds_of(triples, folds, seed)
    assert fold.shape == (len(codes),) and bool(((fold >= 0) & (fold < folds)).all())
    for row in range(len(codes)):
        same = (triples == triples[row]).all(dim=1)
        assert bool((fold[same] == fold[row]).all())


def test_folds_are_random_not_blocks():
    triples = torch.stack([torch.arange(1000), torch.zeros(1000, dtype=torch.long), torch.arange(1000)], dim=1)
    fold = folds_of(triples, 4, 0)
    assert not torch.equal(fold, torch.arange(1000) % 4) and not torch.equal(fold, torch.arange(1000) // 250)
    assert not torch.equal(fold, folds_of(triples, 4, 1))


@pytest.mark.parametrize("folds", [1, 0, -3, True, 2.0])
def test_fewer_than_two_folds_are_refused(folds):
    with pytest.raises(KGTracinError, match="at least 2 folds"):
        HeldOutConfig(folds=folds)


def _log_rank(model, triple, known: KnownTriples, inverse: bool) -> float:
    """Independent: every tail and every head scored with ``score_hrt`` one by one, filtered, ranked realistically.
    With inverse triples, PyKEEN's internal id of relation r is 2r, and heads are the tails of 2r + 1."""
    h, r, t = triple.tolist()
    entities = range(model.num_entities)
    with torch.no_grad():
        forward = 2 * r if inverse else r
        tails = model.score_hrt(torch.tensor([[h, forward, e] for e in entities])).view(-1).tolist()
        if inverse:
            heads = model.score_hrt(torch.tensor([[t, 2 * r + 1, e] for e in entities])).view(-1).tolist()
        else:
            heads = model.score_hrt(torch.tensor([[e, r, t] for e in entities])).view(-1).tolist()

    def rank(scores, own, others_true):
        others = [s for e, s in enumerate(scores) if e != own and e not in others_true]
        return 1.0 + sum(s > scores[own] for s in others) + 0.5 * sum(s == scores[own] for s in others)

    return math.log(rank(tails, t, set(known.tails(h, r).tolist()))) + math.log(
        rank(heads, h, set(known.heads(r, t).tolist()))
    )


def _fake_retrainings(monkeypatch, run, models: list, deleted: list, nan: bool = False) -> None:
    """Each retraining returns the run's model, moved differently each time, in float64 (no rounding ties)."""

    def retrained(self, rows, epochs=None):
        model = copy.deepcopy(run.model).double()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.3 * len(models) * torch.randn_like(parameter))
                if nan:
                    parameter.fill_(float("nan"))
        models.append(model.eval())
        deleted.append(list(rows))
        return model

    monkeypatch.setattr(end_to_end._Retrainer, "__call__", retrained)


@pytest.mark.parametrize("model", ["DistMult", "ConvE"])
def test_each_triple_is_scored_by_the_model_retrained_without_its_fold(model, run_factory, monkeypatch):
    """Every fold is left out of exactly one retraining, and its triples are ranked (both sides, filtered by the
    training triples) by that retraining's model: checked against ``score_hrt`` one entity at a time, for a model
    without inverse triples and one with them (ConvE's heads are the tails of the inverse relation)."""
    inverse = model == "ConvE"
    run = load_run(run_factory(model, inverse))
    train = run.training_triples
    models, deleted = [], []
    _fake_retrainings(monkeypatch, run, models, deleted)
    scores = held_out_scores(run, HeldOutConfig(folds=3, progress=False))
    assert scores.dtype == torch.float64 and scores.shape == (train.shape[0],)
    assert len(deleted) == 3 and sorted(row for rows in deleted for row in rows) == list(range(train.shape[0]))
    assert torch.equal(torch.tensor(deleted[1]), (folds_of(train, 3, 0) == 1).nonzero().flatten())
    known = KnownTriples([train])
    for fitted, rows in zip(models, deleted):
        for row in rows[:8]:
            expected = _log_rank(fitted, train[row], known, inverse)
            assert scores[row].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert (scores >= 0).all() and scores.max() > 0


def test_copies_of_a_training_triple_are_left_out_together(distmult_run, monkeypatch):
    run = load_run(distmult_run)
    run.training_triples = torch.cat([run.training_triples, run.training_triples[:40]])
    models, deleted = [], []
    _fake_retrainings(monkeypatch, run, models, deleted)
    held_out_scores(run, HeldOutConfig(folds=4, progress=False))
    n = run.training_triples.shape[0] - 40
    for rows in deleted:
        left_out = set(rows)
        assert all((row in left_out) == (row + n in left_out) for row in range(40))


def test_a_retraining_that_diverges_is_refused(distmult_run, monkeypatch):
    run = load_run(distmult_run)
    _fake_retrainings(monkeypatch, run, [], [], nan=True)
    with pytest.raises(KGTracinError, match="non-finite scores"):
        held_out_scores(run, HeldOutConfig(folds=2, progress=False))


def test_a_run_without_a_recipe_or_with_fewer_triples_than_folds_is_refused(distmult_run_copy):
    run = load_run(distmult_run_copy)
    with pytest.raises(KGTracinError, match="at least as many distinct training triples"):
        held_out_scores(run, HeldOutConfig(folds=run.training_triples.shape[0] + 1, progress=False))
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    manifest.pop("training")
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KGTracinError, match="the held_out detector retrains with the run's own recipe"):
        held_out_scores(load_run(distmult_run_copy), HeldOutConfig(progress=False))


def test_the_audit_orders_by_held_out_with_real_retrainings(distmult_run, tmp_path, capsys):
    """Two real retrainings of the run's recipe: the column is the API's, to the last bit, and orders the rows."""
    out = tmp_path / "audit.tsv"
    code, stdout, err = run_cli(
        capsys, "audit", distmult_run, "--order-by", "held_out", "--folds", "2", "--output", out
    )
    assert code == 0, err
    assert "held_out: retraining the run's recipe 2 times, each without 1/2 of the training triples" in err
    assert "most suspicious first by held_out" in stdout
    frame = pd.read_csv(out, sep="\t")
    assert frame["held_out"].is_monotonic_decreasing and "memorization" in frame.columns
    expected = held_out_scores(load_run(distmult_run), HeldOutConfig(folds=2, progress=False))
    assert torch.equal(torch.tensor(frame["held_out"].to_numpy()), expected[torch.tensor(frame["train_index"])])


def test_folds_add_the_column_beside_another_order(distmult_run, tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(
        "kgtracin.evaluation.held_out.held_out_scores",
        lambda run, config: seen.append(config.folds) or torch.arange(run.training_triples.shape[0]).double(),
    )
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run, "--order-by", "memorization", "--folds", "3", "--output", out)
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    assert seen == [3] and frame["memorization"].is_monotonic_decreasing
    assert (frame["held_out"] == frame["train_index"]).all()
    out.unlink()
    code, _, err = run_cli(capsys, "audit", distmult_run, "--order-by", "held_out", "--output", out)
    assert code == 0, err
    assert seen == [3, 5] and "5 times" in err  # the default number of folds


def test_held_out_is_refused_in_one_line_with_no_output(distmult_run_copy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--folds", "1", "--output", out)
    assert code == 2 and "--folds" in err and not out.exists()
    computed = []
    monkeypatch.setattr("kgtracin.audit.detector_scores", lambda *a, **k: computed.append(1))
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--folds", "100000", "--output", out)
    assert_clean_error(code, err, "100000 folds", "distinct training triples")
    assert not out.exists() and not computed
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    manifest.pop("training")
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--order-by", "held_out", "--output", out)
    assert_clean_error(code, err, "held_out detector retrains", "kgtracin train")
    assert not out.exists() and not computed  # refused before any detector is computed


def test_an_order_the_run_cannot_compute_is_refused_before_any_work(distmult_run_copy, tmp_path, capsys, monkeypatch):
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    manifest["splits"].pop("validation")
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    computed = []
    monkeypatch.setattr("kgtracin.audit.detector_scores", lambda *a, **k: computed.append(1))
    monkeypatch.setattr("kgtracin.evaluation.held_out.held_out_scores", lambda *a, **k: computed.append(2))
    out = tmp_path / "audit.tsv"
    for order in ("validation", "validation_cosine"):
        code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--order-by", order, "--folds", "2", "--output", out)
        assert_clean_error(code, err, f"--order-by {order}", "validation triples")
        assert not out.exists() and not computed


def test_as_many_folds_as_distinct_triples_and_no_more(distmult_run):
    """Copies count once: a run of N rows with 40 repeated has N - 40 distinct triples."""
    from kgtracin.evaluation.held_out import check_held_out

    run = load_run(distmult_run)
    run.training_triples = torch.cat([run.training_triples, run.training_triples[:40]])
    distinct = run.training_triples.shape[0] - 40
    check_held_out(run, HeldOutConfig(folds=distinct, progress=False))
    with pytest.raises(KGTracinError, match=f"{distinct + 1} folds need .* the run has {distinct}$"):
        check_held_out(run, HeldOutConfig(folds=distinct + 1, progress=False))


def test_no_triples_rank_to_nothing_and_one_non_finite_side_is_refused(distmult_run, monkeypatch):
    from kgtracin.evaluation import held_out

    run = load_run(distmult_run)
    known = KnownTriples([run.training_triples])
    empty = held_out.log_ranks(run.model, torch.zeros(0, 3, dtype=torch.long), known)
    assert empty.shape == (0,) and empty.dtype == torch.float64
    original = held_out.head_view

    def nan_heads(model, triples, known):
        scores, ranks = original(model, triples, known)
        return scores.clone().fill_(float("nan")), ranks

    monkeypatch.setattr(held_out, "head_view", nan_heads)
    with pytest.raises(KGTracinError, match="non-finite"):
        held_out.log_ranks(run.model, run.training_triples[:5], known)
