"""The ``held_out`` detector: folds, the model that scores each triple, the ranks, and the CLI."""

from __future__ import annotations

import collections
import copy
import json
import math
import statistics

import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kgtracin.errors import KGTracinError
from kgtracin.evaluation import end_to_end, held_out
from kgtracin.evaluation.held_out import HeldOutConfig, folds_of, held_out_scores, standardized_by_relation
from kgtracin.evaluation.learned import cross_fitted_detectors
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
    """Each retraining returns the run's model, moved differently each time (the same way for the same place in
    ``models``), in float64 (no rounding ties)."""

    def retrained(self, rows, epochs=None):
        model = copy.deepcopy(run.model).double()
        generator = torch.Generator().manual_seed(len(models))
        with torch.no_grad():
            for parameter in model.parameters():
                move = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(0.3 * len(models) * move)
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
    scores = held_out_scores(run, HeldOutConfig(folds=3, by_relation=False, progress=False, keep=False))
    assert scores.dtype == torch.float64 and scores.shape == (train.shape[0],)
    assert len(deleted) == 3 and sorted(row for rows in deleted for row in rows) == list(range(train.shape[0]))
    assert torch.equal(torch.tensor(deleted[1]), (folds_of(train, 3, 0) == 1).nonzero().flatten())
    known = KnownTriples([train])
    for fitted, rows in zip(models, deleted):
        for row in rows[:8]:
            expected = _log_rank(fitted, train[row], known, inverse)
            assert scores[row].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert (scores >= 0).all() and scores.max() > 0


def _shrunk(raw: list[float], relations: list[int], prior: float) -> list[float]:
    """Independent: each relation's mean and variance start from ``prior`` pseudo-triples at all scores' mean and
    population variance (``statistics``, one relation at a time, no rescaling)."""
    mean, var = statistics.fmean(raw), statistics.pvariance(raw)
    out = []
    for x, relation in zip(raw, relations):
        own = [y for y, r in zip(raw, relations) if r == relation]
        mean_r = (sum(own) + prior * mean) / (len(own) + prior)
        var_r = (sum((y - mean_r) ** 2 for y in own) + prior * (var + (mean - mean_r) ** 2)) / (len(own) + prior)
        out.append((x - mean_r) / math.sqrt(var_r))
    return out


@pytest.mark.parametrize("prior", [5.0, 0.5])
def test_the_default_standardises_the_log_ranks_within_each_relation(distmult_run, monkeypatch, prior):
    """The same retrainings, scored both ways: the default is each log rank standardised by its relation's mean
    and deviation, shrunk towards all triples' by ``relation_prior`` pseudo-triples (computed independently)."""
    run = load_run(distmult_run)
    _fake_retrainings(monkeypatch, run, [], [])
    raw = held_out_scores(run, HeldOutConfig(folds=3, by_relation=False, progress=False, keep=False))
    models = []
    _fake_retrainings(monkeypatch, run, models, [])
    scores = held_out_scores(run, HeldOutConfig(folds=3, relation_prior=prior, progress=False, keep=False))
    relations = run.training_triples[:, 1].tolist()
    assert 1 in collections.Counter(relations).values()  # a lone relation: compared with all triples
    assert scores.tolist() == pytest.approx(_shrunk(raw.tolist(), relations, prior), rel=1e-10, abs=1e-10)
    assert not torch.equal(scores.argsort(), raw.argsort())


def test_equal_rank_products_tie_exactly(monkeypatch):
    """``log 1 + log 3`` and ``log 1.5 + log 2`` differ in the last bit; their relation must not see a spread."""
    tail, head = torch.tensor([1.0, 1.5, 3.0], dtype=torch.float64), torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    monkeypatch.setattr(held_out, "ranks_both_ways", lambda *a: (tail, head))
    x = held_out.log_ranks(None, torch.zeros(3, 3, dtype=torch.long), None)
    assert x[0] == x[1] == x[2] == pytest.approx(math.log(3), rel=1e-15)


# scores on a grid of 1/64: any two distinct ones stay distinct when moved and stretched (tiny spreads: a test below)
_RELATION_SCORES = st.lists(
    st.tuples(st.integers(0, 4), st.integers(-3200, 3200).map(lambda i: i / 64)), min_size=1, max_size=60
)


@settings(max_examples=80, deadline=None)
@given(_RELATION_SCORES, st.floats(0.1, 10), st.floats(-20, 20), st.floats(0.01, 100))
def test_standardising_keeps_each_relations_order_and_ignores_units(rows, scale, offset, prior):
    """The result does not depend on the scores' unit or origin, keeps the order within each relation, and agrees
    with the independent formula."""
    relations = torch.tensor([r for r, _ in rows])
    scores = torch.tensor([x for _, x in rows], dtype=torch.float64)
    out = standardized_by_relation(scores, relations, prior)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()
    if scores.max() == scores.min():
        assert out.eq(0).all()
        return
    again = standardized_by_relation(scores * scale + offset, relations, prior)
    assert torch.allclose(again, out, rtol=1e-6, atol=1e-6)
    assert out.tolist() == pytest.approx(_shrunk(scores.tolist(), relations.tolist(), prior), rel=1e-7, abs=1e-7)
    for r in set(relations.tolist()):
        group, raw = out[relations == r], scores[relations == r]
        assert bool((group[torch.argsort(raw, stable=True)].diff() >= -1e-12).all())


@settings(max_examples=60, deadline=None)
@given(
    _RELATION_SCORES,
    st.lists(st.floats(0.1, 10), min_size=5, max_size=5),
    st.lists(st.floats(-20, 20), min_size=5, max_size=5),
)
def test_a_faint_prior_removes_each_relations_offset_and_scale(rows, scales, offsets):
    """With a prior of almost no triples, a relation whose facts all rank worse (or spread wider) than another's
    weighs nothing in the order: each relation of distinct scores gets mean 0 and deviation 1, whatever its unit."""
    relations = torch.tensor([r for r, _ in rows])
    scores = torch.tensor([x for _, x in rows], dtype=torch.float64)
    moved = scores * torch.tensor(scales, dtype=torch.float64)[relations] + torch.tensor(offsets)[relations]
    for values in (scores, moved):
        out = standardized_by_relation(values, relations, 1e-12)
        for r in set(relations.tolist()):
            group, raw = out[relations == r], values[relations == r]
            if raw.max() - raw.min() > 1e-2 * (values.max() - values.min()):  # the prior is negligible there
                assert group.mean().item() == pytest.approx(0.0, abs=1e-4)
                assert group.std(correction=0).item() == pytest.approx(1.0, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.floats(-9, 9, allow_nan=False), st.integers(1, 4)), min_size=1, max_size=40
    )
)
def test_a_weight_counts_as_that_many_copies(rows):
    """The held-out ceiling weighs a sample to stand for a population: weight w is w copies of the score."""
    relations = torch.tensor([r for r, _, _ in rows])
    scores = torch.tensor([x for _, x, _ in rows], dtype=torch.float64)
    weights = torch.tensor([w for _, _, w in rows])
    weighted = standardized_by_relation(scores, relations, weights=weights.double())
    copies = standardized_by_relation(scores.repeat_interleave(weights), relations.repeat_interleave(weights))
    first = torch.cumsum(weights, 0) - weights
    assert torch.allclose(weighted, copies[first], rtol=1e-9, atol=1e-9)


def test_a_lone_relation_leans_on_all_triples_and_a_flat_graph_scores_zero():
    scores = torch.tensor([1.0, 3.0, 5.0, 7.0, 2.0, 2.0], dtype=torch.float64)
    relations = torch.tensor([0, 0, 0, 1, 2, 2])  # relation 1 has one triple, relation 2 two equal ones
    out = standardized_by_relation(scores, relations, prior=2.0)
    mean, var = statistics.fmean(scores.tolist()), statistics.pvariance(scores.tolist())
    lone_mean = (7.0 + 2 * mean) / 3
    lone_var = ((7.0 - lone_mean) ** 2 + 2 * (var + (mean - lone_mean) ** 2)) / 3
    assert out[3].item() == pytest.approx((7.0 - lone_mean) / math.sqrt(lone_var), rel=1e-12)
    assert out[4].item() == out[5].item() < 0  # equal scores, below the graph's mean: no division by zero
    pair = standardized_by_relation(torch.tensor([0.0, 0.1, 10.0, 20.0]), torch.tensor([0, 0, 1, 1]))
    assert abs(pair[1] - pair[0]) < 0.1  # two close scores are not pinned to -1 and +1
    assert standardized_by_relation(torch.full((3,), 4.0), torch.tensor([0, 0, 1])).eq(0).all()
    assert standardized_by_relation(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)
    tiny = standardized_by_relation(
        torch.tensor([0.0, 5e-324, 1.0, 2.0], dtype=torch.float64), torch.tensor([0, 0, 1, 1])
    )
    assert torch.isfinite(tiny).all() and abs(tiny[1] - tiny[0]) < 1e-300


@pytest.mark.parametrize(
    "scores, relations, weights, prior, problem",
    [
        ([1.0, float("nan")], [0, 0], None, 5.0, "score is not finite"),
        ([1.0, float("inf")], [0, 1], None, 5.0, "score is not finite"),
        ([1.0, 2.0], [0, 1], [1.0, 0.0], 5.0, "finite and positive"),
        ([1.0, 2.0], [0, 1], [1.0, -2.0], 5.0, "finite and positive"),
        ([1.0, 2.0], [0, 1], [1.0, float("nan")], 5.0, "finite and positive"),
        ([1.0, 2.0], [0], None, 5.0, "one length"),
        ([1.0, 2.0], [0, 1], None, 0.0, "positive number of triples"),
        ([1.0, 2.0], [0, 1], None, float("inf"), "positive number of triples"),
        ([1.0, 2.0], [0, 1], None, True, "positive number of triples"),
    ],
)
def test_standardising_refuses_what_it_cannot_rank(scores, relations, weights, prior, problem):
    weights = None if weights is None else torch.tensor(weights)
    with pytest.raises(KGTracinError, match=problem):
        standardized_by_relation(torch.tensor(scores), torch.tensor(relations), prior, weights)


@pytest.mark.parametrize("prior", [0, -1.0, float("nan"), "5"])
def test_a_relation_prior_that_is_not_a_positive_count_is_refused(prior):
    with pytest.raises(KGTracinError, match="relation prior must be a positive number"):
        HeldOutConfig(relation_prior=prior)


def test_copies_of_a_training_triple_are_left_out_together(distmult_run, monkeypatch):
    run = load_run(distmult_run)
    run.training_triples = torch.cat([run.training_triples, run.training_triples[:40]])
    models, deleted = [], []
    _fake_retrainings(monkeypatch, run, models, deleted)
    held_out_scores(run, HeldOutConfig(folds=4, progress=False, keep=False))
    n = run.training_triples.shape[0] - 40
    for rows in deleted:
        left_out = set(rows)
        assert all((row in left_out) == (row + n in left_out) for row in range(40))


def test_a_retraining_that_diverges_is_refused(distmult_run, monkeypatch):
    run = load_run(distmult_run)
    _fake_retrainings(monkeypatch, run, [], [], nan=True)
    with pytest.raises(KGTracinError, match="non-finite scores"):
        held_out_scores(run, HeldOutConfig(folds=2, progress=False, keep=False))


def test_a_run_without_a_recipe_or_with_fewer_triples_than_folds_is_refused(distmult_run_copy):
    run = load_run(distmult_run_copy)
    with pytest.raises(KGTracinError, match="at least as many distinct training triples"):
        held_out_scores(run, HeldOutConfig(folds=run.training_triples.shape[0] + 1, progress=False, keep=False))
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    manifest.pop("training")
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KGTracinError, match="the held_out detector retrains with the run's own recipe"):
        held_out_scores(load_run(distmult_run_copy), HeldOutConfig(progress=False, keep=False))


def test_the_audit_orders_by_held_out_with_real_retrainings(distmult_run, tmp_path, capsys):
    """Two real retrainings of the run's recipe: the columns are the API's, to the last bit, and order the rows."""
    out = tmp_path / "audit.tsv"
    code, stdout, err = run_cli(
        capsys, "audit", distmult_run, "--order-by", "held_out", "--folds", "2", "--output", out
    )
    assert code == 0, err
    assert "held_out and learned: retraining the run's recipe 2 times, each without 1/2 of the training triples" in err
    assert "learning from 4 plantings of 5% fakes (triples)" in err
    assert "most suspicious first by held_out" in stdout
    frame = pd.read_csv(out, sep="\t")
    assert frame["held_out"].is_monotonic_decreasing and "memorization" in frame.columns
    expected = cross_fitted_detectors(load_run(distmult_run), HeldOutConfig(folds=2, progress=False, keep=False))
    for column in ("held_out", "learned"):
        written = torch.tensor(frame[column].to_numpy())
        assert torch.equal(written, expected[column][torch.tensor(frame["train_index"])])


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
    monkeypatch.setattr("kgtracin.evaluation.learned.cross_fitted_detectors", lambda *a, **k: computed.append(2))
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
    check_held_out(run, HeldOutConfig(folds=distinct, progress=False, keep=False))
    with pytest.raises(KGTracinError, match=f"{distinct + 1} folds need .* the run has {distinct}$"):
        check_held_out(run, HeldOutConfig(folds=distinct + 1, progress=False, keep=False))


def test_no_triples_rank_to_nothing_and_one_non_finite_side_is_refused(distmult_run, monkeypatch):
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
