"""Greedy explanation sets (``--variant selection=greedy``): chosen one fact at a time by the cheap check."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kgtracin.errors import KGTracinError
from kgtracin.evaluation.check import CheckConfig, _mimic
from kgtracin.evaluation.end_to_end import EndToEndConfig, fingerprint, run_end_to_end
from kgtracin.evaluation.greedy import GREEDY_POOL, greedy_sets, tail_margins
from kgtracin.evaluation.variants import Variant, parse_variant
from kgtracin.evaluation.workspace import Workspace
from kgtracin.predictions import KnownTriples
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli
from .test_end_to_end import spy_retrainings

CONFIG = CheckConfig(steps=3, learning_rate=0.05, chunk=64)


def _margin(model, target, known: KnownTriples) -> float:
    """The target tail's score minus the best score of a tail that is not a known fact, one entity at a time."""
    h, r, t = (int(x) for x in target)
    with torch.no_grad():
        scores = model.predict_t(torch.tensor([[h, r]])).double()[0]
    if model.predict_with_sigmoid:
        scores = torch.logit(scores)
    filtered = set(torch.as_tensor(known.tails(h, r)).tolist())
    others = [float(scores[e]) for e in range(model.num_entities) if e != t and e not in filtered]
    return float(scores[t]) - max(others)


@pytest.fixture(scope="module")
def setting(distmult_run):
    run = load_run(distmult_run)
    known = KnownTriples(run.splits.values())
    test = run.splits["testing"]
    heads = test[:, 0].tolist()
    picked = [i for i, h in enumerate(heads) if heads.index(h) == i][:3]  # predictions with distinct heads
    return run, known, test[picked]


def test_parse_greedy_variant():
    greedy = parse_variant("selection=greedy")
    assert greedy == Variant(selection="greedy") and greedy.name == "TracIn (selection=greedy)"
    assert parse_variant("loss=bce, selection=greedy").name == "TracIn (loss=bce, selection=greedy)"
    assert parse_variant("selection=top") == Variant()
    with pytest.raises(KGTracinError, match="selection must be top or greedy"):
        parse_variant("selection=best")


def test_margins_against_a_loop(setting):
    import copy

    run, known, targets = setting
    model = copy.deepcopy(run.model).double()  # float64, so that the two orders of summation agree to 1e-12
    margins = tail_margins(model, targets, known)
    expected = torch.tensor([_margin(model, t, known) for t in targets], dtype=torch.float64)
    assert torch.allclose(margins, expected, rtol=1e-12, atol=1e-12)


def test_greedy_set_of_one_prediction_against_brute_force(setting):
    """With one prediction nothing else is deleted: each step is the candidate whose relearning without it (and
    the facts chosen) leaves the lowest margin, written out one relearning per candidate."""
    import copy

    run, known, targets = setting
    model = copy.deepcopy(run.model).double()
    train, target = run.training_triples, targets[:1]
    head = int(target[0, 0])
    mentions = [i for i, (h, _, t) in enumerate(train.tolist()) if head in (h, t)]
    candidates = mentions[:5]
    chosen, margins = greedy_sets(model, train, target, [candidates], 3, known, CONFIG)

    expected, trace = [], []
    for _ in range(3):
        tried = {}
        for c in candidates:
            if c in expected:
                continue
            rows = [i for i in mentions if i not in expected and i != c]
            mimic = _mimic(model, torch.tensor([head]), train[rows], CONFIG)
            tried[c] = _margin(mimic, target[0], known)
        pick = min(tried, key=lambda c: (tried[c], candidates.index(c)))
        expected.append(pick)
        trace.append(tried[pick])
    assert chosen == [expected]
    assert all(math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12) for a, b in zip(margins[0], trace)), (margins, trace)


def test_greedy_sets_are_nested_and_drawn_from_the_candidates(setting):
    run, known, targets = setting
    train = run.training_triples
    candidates = []
    for h in targets[:, 0].tolist():
        rows = ((train[:, 0] == h) | (train[:, 2] == h)).nonzero().squeeze(1).tolist()
        candidates.append(rows[:4])
    candidates[-1] = candidates[-1][:1]  # fewer candidates than k
    two, _ = greedy_sets(run.model, train, targets, candidates, 2, known, CONFIG)
    one, _ = greedy_sets(run.model, train, targets, candidates, 1, known, CONFIG)
    assert [rows[:1] for rows in two] == one
    for rows, pool in zip(two, candidates):
        assert set(rows) <= set(pool) and len(set(rows)) == len(rows) == min(2, len(pool))
    none, margins = greedy_sets(run.model, train, targets, [[] for _ in candidates], 2, known, CONFIG)
    assert none == [[], [], []] and margins == [[], [], []]


def test_end_to_end_deletes_the_greedy_sets(distmult_run, tmp_path, monkeypatch):
    """The greedy variant's explanation puts the greedy set of its best positive proponents first, and its arms
    delete the union of those sets."""
    from kgtracin.evaluation.check import run_check_config
    from kgtracin.tracin import TracIn

    run = load_run(distmult_run)
    config = EndToEndConfig(
        predictions=3, ks=(2,), variants=(Variant(selection="greedy"),), baselines=False, progress=False
    )
    calls = spy_retrainings(monkeypatch)
    assert fingerprint(run, config)["greedy"] == {"pool": GREEDY_POOL, "steps": config.check_steps}
    result = run_end_to_end(run, Workspace(tmp_path / "ev", fingerprint(run, config)), config)
    targets = torch.tensor(result["predictions"])
    known = KnownTriples(run.splits.values())

    from kgtracin.config import EXPLAIN_CANDIDATES

    proponents = (
        TracIn(
            run.model,
            run.training_triples,
            run.checkpoints,
            labels=run.labels,
            loss=run.tracin_loss,
            candidates=EXPLAIN_CANDIDATES,
            progress=False,
        )
        .influence(targets, top_k=GREEDY_POOL)
        .proponents
    )
    candidates = [
        [i for i, s in zip(rows.tolist(), scores.tolist()) if s > 0]
        for rows, scores in zip(proponents.indices, proponents.scores)
    ]
    check = run_check_config(run, steps=config.check_steps)
    chosen, margins = greedy_sets(run.model, run.training_triples, targets, candidates, 2, known, check)
    record = json.loads((tmp_path / "ev" / "explanation-0.json").read_text())
    assert [rows[: len(c)] for rows, c in zip(record["indices"], chosen)] == chosen
    assert record["greedy"]["margins"] == margins and record["greedy"]["pool"] == GREEDY_POOL
    (arm,) = result["arms"]
    union = sorted({i for c in chosen for i in c})
    assert arm["arm"] == "TracIn (selection=greedy)" and arm["deleted"] == len(union)
    assert calls[-1] == (tuple(union), None)  # the retraining left out exactly the greedy sets
    # and they are not TracIn's top 2 (else this test could not tell the two apart)
    assert any(set(c) != set(top[:2]) for c, top in zip(chosen, candidates))


def test_greedy_refused_in_one_line_where_the_check_cannot_run(distmult_run, tmp_path, capsys, monkeypatch):
    from kgtracin.evaluation import check

    monkeypatch.setattr(check, "check_unsupported", lambda model: "its entity rows are computed")
    out = tmp_path / "ev"
    args = ("evaluate", distmult_run, "--protocol", "end-to-end", "--variant", "selection=greedy", "--output", out)
    code, _, err = run_cli(capsys, *args)
    assert_clean_error(code, err, "selection=greedy", "its entity rows are computed")
    assert not out.exists()
