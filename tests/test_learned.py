"""The ``learned`` detector: planted fakes ranked by the model of their fold, their cues judged in their own
graph, the classifier it fits, and the CLI."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from kgtracin.consistency import multiplicity_surprise, pair_surprise, role_surprise
from kgtracin.errors import KGTracinError
from kgtracin.evaluation import learned as learned_module
from kgtracin.evaluation.held_out import (
    HeldOutConfig,
    cross_fit,
    folds_of,
    held_out_scores,
    standardized_by_relation,
)
from kgtracin.evaluation.learned import CUES, LearnedConfig, check_learned, cross_fitted_detectors
from kgtracin.predictions import KnownTriples
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli
from .test_held_out import _fake_retrainings, _log_rank


def test_probes_are_ranked_by_the_model_of_their_fold(distmult_run, monkeypatch):
    run = load_run(distmult_run)
    train = run.training_triples
    models, deleted = [], []
    _fake_retrainings(monkeypatch, run, models, deleted)
    probes = torch.tensor([[0, 0, 1], [1, 1, 2], [2, 2, 3], [3, 0, 4], [4, 1, 0], [5, 2, 1]])
    probe_folds = torch.tensor([2, 0, 1, 2, 0, 1])
    config = HeldOutConfig(folds=3, progress=False, keep=False)
    scores, probed = cross_fit(run, config, probes, probe_folds)
    assert probed.dtype == torch.float64 and probed.shape == (6,)
    known = KnownTriples([train])
    for probe, fold, got in zip(probes, probe_folds.tolist(), probed.tolist()):
        assert got == pytest.approx(_log_rank(models[fold], probe, known, False), rel=1e-12, abs=1e-12)
    assert torch.equal(torch.tensor(deleted[1]), (folds_of(train, 3, 0) == 1).nonzero().flatten())
    _fake_retrainings(monkeypatch, run, [], [])
    assert torch.equal(
        scores, held_out_scores(run, HeldOutConfig(folds=3, by_relation=False, progress=False, keep=False))
    )
    assert cross_fit(run, config)[1] is None


class _Recorder:
    """Stands in for scikit-learn's classifier: keeps what it is given, and scores a row by a fixed mix of cues."""

    made: ClassVar[list] = []
    #: the first fit scores every triple alike (a tie across the set-aside cut)
    tied: ClassVar[bool] = False

    def __init__(self, **kwargs):
        self.kwargs, self.fitted = kwargs, None
        _Recorder.made.append(self)
        self.scale = len(_Recorder.made)  # the second fit's scores are twice the first's: which one counts shows

    def fit(self, rows, labels):
        self.fitted = (rows, labels)
        return self

    def decision_function(self, rows):
        if _Recorder.tied and self.scale == 1:
            return np.zeros(rows.shape[0])
        return rows @ [1.0, 2.0, 3.0, 4.0] * self.scale


def test_the_classifier_learns_planted_fakes_against_training_triples_each_in_its_own_graph(distmult_run, monkeypatch):
    """Independently: each planting's fakes are drawn as the field's protocol draws them, never known; the cues of
    the fit are those of the training triples plus that planting, judged in that graph; the held-out column is
    ``held_out_scores``'; and the scores are the classifier's on the cues of the training graph alone."""
    import sklearn.ensemble

    from kgtracin.evaluation.noisy import corrupt

    run = load_run(distmult_run)
    train, n = run.training_triples, run.training_triples.shape[0]
    monkeypatch.setattr(sklearn.ensemble, "HistGradientBoostingClassifier", _Recorder)
    _Recorder.made.clear()
    calls = []

    def spy(run, config, probes=None, probe_folds=None):
        calls.append((probes, probe_folds))
        result = cross_fit(run, config, probes, probe_folds)
        calls.append(result)
        return result

    monkeypatch.setattr(learned_module, "cross_fit", spy)
    _fake_retrainings(monkeypatch, run, [], [])
    config, learned = HeldOutConfig(folds=3, progress=False, keep=False), LearnedConfig(plantings=2, seed=4)
    out = cross_fitted_detectors(run, config, learned)
    (probes, probe_folds), (raw, probed) = calls
    _fake_retrainings(monkeypatch, run, [], [])
    assert torch.equal(out["held_out"], held_out_scores(run, config))
    classifier, again = _Recorder.made
    assert classifier.kwargs == again.kwargs == {"monotonic_cst": [1, 1, 1, 1], "random_state": 4}
    rows, labels = classifier.fitted
    known = {tuple(t) for split in run.splits.values() for t in split.tolist()}
    sizes = [round(0.05 * n)] * 2
    fakes = []
    for index in range(2):
        planted, mask = corrupt(
            "triples", train, 0.05, len(run.labels.entities), len(run.labels.relations), 4 + index, known
        )
        fakes.append(planted[mask])
        assert not ({tuple(t) for t in planted[mask].tolist()} & known)
    assert torch.equal(probes, torch.cat(fakes)) and set(probe_folds.tolist()) <= {0, 1, 2}
    assert rows.shape == (2 * n + sum(sizes), len(CUES))
    assert labels.tolist() == ([0.0] * n + [1.0] * sizes[0]) * 2
    start = 0
    for fake, fake_raw in zip(fakes, probed.split(sizes)):
        block = torch.from_numpy(rows[start : start + n + fake.shape[0]])
        start += n + fake.shape[0]
        graph = torch.cat([train, fake])
        torch.testing.assert_close(
            block[:, 0], standardized_by_relation(torch.cat([raw, fake_raw]), graph[:, 1]), rtol=0, atol=0
        )
        torch.testing.assert_close(block[:, 1], role_surprise(graph), rtol=0, atol=0)
        torch.testing.assert_close(block[:, 2], pair_surprise(graph), rtol=0, atol=0)
        torch.testing.assert_close(block[:, 3], multiplicity_surprise(graph), rtol=0, atol=0)
    expected = torch.stack(
        [
            standardized_by_relation(raw, train[:, 1]),
            role_surprise(train),
            pair_surprise(train),
            multiplicity_surprise(train),
        ],
        1,
    ) @ torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    # the second fit leaves out, among the real examples of every planting, the 2% of the training triples that
    # the first fit scores highest, and its scores are the column's
    aside = sorted(range(n), key=lambda row: (-expected[row].item(), row))[: round(0.02 * n)]
    assert len(aside) >= 1
    real = [[row not in aside for row in range(n)] + [True] * size for size in sizes]
    kept = torch.tensor([flag for block in real for flag in block])
    again_rows, again_labels = again.fitted
    assert np.array_equal(again_rows, rows[kept.numpy()]) and np.array_equal(again_labels, labels[kept.numpy()])
    torch.testing.assert_close(out["learned"], 2 * expected, rtol=1e-12, atol=1e-12)
    # with nothing set aside, one fit
    _Recorder.made.clear()
    _fake_retrainings(monkeypatch, run, [], [])
    once = cross_fitted_detectors(run, config, dataclasses.replace(learned, set_aside=0.0))
    assert len(_Recorder.made) == 1
    torch.testing.assert_close(once["learned"], expected, rtol=1e-12, atol=1e-12)


def test_a_tie_across_the_set_aside_cut_sets_the_earlier_triples_aside(distmult_run, monkeypatch):
    import sklearn.ensemble

    run = load_run(distmult_run)
    n = run.training_triples.shape[0]
    monkeypatch.setattr(sklearn.ensemble, "HistGradientBoostingClassifier", _Recorder)
    monkeypatch.setattr(_Recorder, "tied", True)
    _Recorder.made.clear()
    _fake_retrainings(monkeypatch, run, [], [])
    learned = LearnedConfig(plantings=1, set_aside=0.1)
    cross_fitted_detectors(run, HeldOutConfig(folds=3, progress=False, keep=False), learned)
    first, again = _Recorder.made
    rows, labels = first.fitted
    aside = round(0.1 * n)
    assert np.array_equal(again.fitted[0], rows[aside:]) and np.array_equal(again.fitted[1], labels[aside:])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"plant": "tails"}, "unknown kind of planted fakes"),
        ({"fraction": 0.0}, "share of planted fakes"),
        ({"fraction": 1.0}, "share of planted fakes"),
        ({"fraction": True}, "share of planted fakes"),
        ({"plantings": 0}, "at least one planting"),
        ({"plantings": 2.0}, "at least one planting"),
        ({"seed": -1}, "seed must be an integer"),
        ({"seed": 2**32 - 4}, "seed must be an integer"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"seed": True}, "seed must be an integer"),
        ({"set_aside": -0.01}, "share set aside"),
        ({"set_aside": 1.0}, "share set aside"),
        ({"set_aside": True}, "share set aside"),
        ({"set_aside": "0.1"}, "share set aside"),
    ],
)
def test_a_bad_learned_config_is_refused(kwargs, message):
    with pytest.raises(KGTracinError, match=message):
        LearnedConfig(**kwargs)


def test_a_run_too_small_to_plant_a_fake_is_refused(distmult_run):
    run = load_run(distmult_run)
    run.training_triples = run.training_triples[:9]
    with pytest.raises(KGTracinError, match="none of the run's 9"):
        check_learned(run, HeldOutConfig(folds=3, progress=False, keep=False), LearnedConfig())
    run.training_triples = load_run(distmult_run).training_triples[:11]
    check_learned(run, HeldOutConfig(folds=3, progress=False, keep=False), LearnedConfig())  # one fake: round(0.55)


def test_folds_add_the_columns_beside_another_order(distmult_run, tmp_path, capsys, monkeypatch):
    seen = []

    def columns(run, held_out, learned, fakes):
        seen.append((held_out.folds, learned.plant))
        index = torch.arange(run.training_triples.shape[0]).double()
        return {"held_out": index, "learned": -index}

    monkeypatch.setattr("kgtracin.evaluation.learned.cross_fitted_detectors", columns)
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run, "--order-by", "memorization", "--folds", "3", "--output", out)
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    assert seen == [(3, "triples")] and frame["memorization"].is_monotonic_decreasing
    assert (frame["held_out"] == frame["train_index"]).all() and (frame["learned"] == -frame["train_index"]).all()
    for order, plant, expected in (("held_out", (), "triples"), ("learned", ("--plant", "plausible"), "plausible")):
        out.unlink()
        code, stdout, err = run_cli(capsys, "audit", distmult_run, "--order-by", order, *plant, "--output", out)
        assert code == 0, err
        assert seen[-1] == (5, expected) and "5 times" in err  # the default number of folds
        assert f"most suspicious first by {order}" in stdout
        assert pd.read_csv(out, sep="\t")[order].is_monotonic_decreasing
    out.unlink()
    code, _, err = run_cli(
        capsys, "audit", distmult_run, "--order-by", "memorization", "--plant", "triples", "--output", out
    )
    assert_clean_error(code, err, "--plant", "auto or the learned column")  # nothing planted: no auto, no folds
    assert not out.exists()
    code, _, err = run_cli(
        capsys, "audit", distmult_run, "--order-by", "held_out", "--plant", "plausible", "--output", out
    )
    assert code == 0, err
    assert seen[-1] == (5, "plausible")  # held_out's retrainings give the learned column too
    out.unlink()
    code, _, err = run_cli(
        capsys,
        "audit",
        distmult_run,
        "--order-by",
        "memorization",
        "--folds",
        "2",
        "--plant",
        "plausible",
        "--output",
        out,
    )
    assert code == 0, err
    assert seen[-1] == (2, "plausible")  # --plant reaches the learned column whatever orders the rows


def test_a_run_too_small_to_plant_in_gets_held_out_alone_unless_learned_is_asked_for(
    distmult_run_copy, tmp_path, capsys, monkeypatch
):
    training = distmult_run_copy / "triples" / "training.tsv"
    lines = training.read_text().splitlines(keepends=True)
    training.write_text("".join(lines[:9]))  # no header: nine triples
    monkeypatch.setattr(
        "kgtracin.evaluation.held_out.held_out_scores",
        lambda run, config: torch.arange(run.training_triples.shape[0]).double(),
    )
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(
        capsys, "audit", distmult_run_copy, "--order-by", "held_out", "--folds", "3", "--output", out
    )
    assert code == 0, err
    assert "no learned column: the learned detector plants 0.05 of the training triples, none of the run's 9" in err
    frame = pd.read_csv(out, sep="\t")
    assert "held_out" in frame.columns and "learned" not in frame.columns
    out.unlink()
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--order-by", "learned", "--folds", "3", "--output", out)
    assert_clean_error(code, err, "none of the run's 9")
    assert not out.exists()


def test_learned_on_a_run_without_a_recipe_is_refused_in_its_own_name(distmult_run_copy, tmp_path, capsys):
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    manifest.pop("training")
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--order-by", "learned", "--output", out)
    assert_clean_error(code, err, "learned detector retrains", "kgtracin train")
    assert not out.exists()


@pytest.mark.parametrize(
    "probes, probe_folds, message",
    [
        (torch.zeros(2, 3, dtype=torch.long), None, "go together"),
        (None, torch.zeros(2, dtype=torch.long), "go together"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 3]), r"in \[0, 3\)"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([-1, 0]), r"in \[0, 3\)"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([0.0, 1.0]), "one integer fold each"),
        (torch.zeros(2, 2, dtype=torch.long), torch.tensor([0, 1]), "one integer fold each"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 1, 2]), "one integer fold each"),
    ],
)
def test_probes_without_a_fold_of_the_run_are_refused_before_retraining(
    distmult_run, monkeypatch, probes, probe_folds, message
):
    run = load_run(distmult_run)
    retrained = []
    _fake_retrainings(monkeypatch, run, retrained, [])
    with pytest.raises(KGTracinError, match=message):
        cross_fit(run, HeldOutConfig(folds=3, progress=False, keep=False), probes, probe_folds)
    assert not retrained


def test_where_every_fake_drawn_is_known_learned_is_refused_and_held_out_goes_on_alone(
    distmult_run, tmp_path, capsys, monkeypatch
):
    from kgtracin.evaluation.learned import plant_fakes

    def nothing_new(kind, triples, *args):
        return triples, torch.zeros(triples.shape[0], dtype=torch.bool)

    monkeypatch.setattr(learned_module, "corrupt", nothing_new)
    with pytest.raises(KGTracinError, match="could not plant fakes"):
        plant_fakes(load_run(distmult_run), LearnedConfig())
    monkeypatch.setattr(
        "kgtracin.evaluation.held_out.held_out_scores",
        lambda run, config: torch.arange(run.training_triples.shape[0]).double(),
    )
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run, "--order-by", "held_out", "--folds", "2", "--output", out)
    assert code == 0, err
    assert "no learned column: the learned detector could not plant fakes" in err
    assert "learned" not in pd.read_csv(out, sep="\t").columns
    out.unlink()
    code, _, err = run_cli(capsys, "audit", distmult_run, "--order-by", "learned", "--folds", "2", "--output", out)
    assert_clean_error(code, err, "could not plant fakes")
    assert not out.exists()
