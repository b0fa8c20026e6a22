"""The audit's detector chosen from the run (``kgtracin audit --order-by auto``): planted fakes, one retraining."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from kgtracin.errors import KGTracinError
from kgtracin.evaluation import calibration
from kgtracin.evaluation.calibration import CalibrationConfig, choose_detector
from kgtracin.evaluation.end_to_end import retraining_config
from kgtracin.evaluation.noisy import corrupt_plausible, corrupt_triples, roc_auc
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli

DETECTORS = ("memorization", "validation_cosine", "validation", "self_influence", "support", "consistency", "loss")


@pytest.fixture
def spied(monkeypatch):
    """Record what the calibration retrains on, and stand in for the detectors: each one's score for a planted
    fake is given by ``spied["auc_order"]`` (the detector's place there: the higher, the better it finds them)."""
    import kgtracin.audit
    import kgtracin.training

    seen = {"auc_order": {}}
    original_fit = kgtracin.training.fit

    def fit(model, config, factory, **kwargs):
        seen["config"], seen["triples"] = config, factory.mapped_triples.clone()
        seen["checkpoint_folder"] = kwargs["callbacks"][0].directory
        return original_fit(model, config, factory, **kwargs)

    def scores(model, triples, validation, checkpoints, detectors, **kwargs):
        seen["scored"], seen["checkpoints"] = triples.clone(), [c for c in checkpoints]
        fake = seen["fake"](triples)
        generator = torch.Generator().manual_seed(1)
        out = {}
        for name in detectors:
            noise = torch.rand(triples.shape[0], generator=generator, dtype=torch.float64)
            out[name] = noise + seen["auc_order"].get(name, 0.0) * fake.double()
        seen["scores"] = out
        return out

    monkeypatch.setattr(kgtracin.training, "fit", fit)
    monkeypatch.setattr(kgtracin.audit, "detector_scores", scores)
    return seen


def _planted(run, seed: int, plant: str = "triples"):
    """The triples the calibration trains on and its fakes, by the field's protocol (or plausible ones), written
    out again."""
    known = {tuple(t) for split in run.splits.values() for t in split.tolist()}
    if plant == "plausible":
        triples, fake = corrupt_plausible(run.training_triples, 0.05, seed, known)
    else:
        triples, fake = corrupt_triples(
            run.training_triples, 0.05, len(run.labels.entities), len(run.labels.relations), seed, known
        )
    return triples, {tuple(t) for t in triples[fake].tolist()}, known


def _spy_on_planted(spied, run_dir, seed: int = 0, plant: str = "plausible"):
    """The run, with the spy told which triples are the calibration's planted fakes: ``run, planted triples, fakes,
    known triples``."""
    run = load_run(run_dir)
    planted, fakes, known = _planted(run, seed, plant)
    spied["fake"] = lambda triples: torch.tensor([tuple(t) in fakes for t in triples.tolist()])
    return run, planted, fakes, known


def test_plants_fakes_retrains_with_the_runs_recipe_and_chooses_the_best(distmult_run, spied, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run, expected, fakes, known = _spy_on_planted(spied, distmult_run, seed=3, plant="triples")
    train = run.training_triples
    spied["auc_order"] = {"self_influence": 0.9, "validation": 0.5, "loss": 0.2}

    best, aucs = choose_detector(run, DETECTORS, CalibrationConfig(seed=3, progress=False, plant="triples"))
    recipe, _ = retraining_config(run)
    assert spied["config"] == recipe
    assert sorted(spied["triples"].tolist()) == sorted(expected.tolist())  # the run's triples and the fakes
    assert len(fakes) == round(0.05 * train.shape[0]) and not fakes & known
    assert torch.equal(spied["scored"], expected)
    assert [c.learning_rate for c in spied["checkpoints"]] == [recipe.learning_rate] * len(recipe.checkpoint_epochs())
    planted = spied["fake"](expected)
    assert aucs == {name: roc_auc(spied["scores"][name], planted) for name in DETECTORS}
    assert aucs["self_influence"] > aucs["validation"] > aucs["loss"] and best == "self_influence"
    assert not spied["checkpoint_folder"].exists()  # the calibration's checkpoints are gone with its folder


def test_plants_plausible_fakes_by_default(distmult_run, spied):
    """The default plant retrains on the run's triples plus the fakes of ``corrupt_plausible``, which differ from
    the field's."""
    run, expected, _, _ = _spy_on_planted(spied, distmult_run)
    field, _, _ = _planted(run, 0, "triples")
    assert sorted(expected.tolist()) != sorted(field.tolist())
    spied["auc_order"] = {"memorization": 1.0}
    assert CalibrationConfig().plant == "plausible"
    best, _ = choose_detector(run, DETECTORS, CalibrationConfig(progress=False))
    assert torch.equal(spied["triples"], expected) and best == "memorization"


def test_a_baseline_that_finds_them_best_is_chosen(distmult_run, spied):
    """Where the model's own loss finds the planted fakes best, the audit orders by it."""
    run, *_ = _spy_on_planted(spied, distmult_run)
    spied["auc_order"] = {"self_influence": 0.5, "loss": 2.0}
    best, aucs = choose_detector(run, DETECTORS, CalibrationConfig(progress=False))
    assert aucs["loss"] > aucs["self_influence"] and best == "loss"


def test_ties_go_to_the_earlier_detector(distmult_run, spied):
    run, *_ = _spy_on_planted(spied, distmult_run)
    spied["auc_order"] = {"validation": 5.0, "self_influence": 5.0}
    best, aucs = choose_detector(run, DETECTORS, CalibrationConfig(progress=False))
    assert aucs["validation"] == aucs["self_influence"] == 1.0 and best == "validation"


def test_refusals(distmult_run_copy):
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(KGTracinError, match="between 0 and 1"):
            CalibrationConfig(fraction=fraction)
    with pytest.raises(KGTracinError, match="unknown kind of planted fakes 'typed'"):
        CalibrationConfig(plant="typed")
    run = load_run(distmult_run_copy)
    with pytest.raises(KGTracinError, match="plants none"):
        choose_detector(run, DETECTORS, CalibrationConfig(fraction=1e-6))
    import kgtracin.training

    def no_training(*args, **kwargs):
        raise AssertionError("retrained before refusing")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kgtracin.training, "fit", no_training)
        with pytest.raises(KGTracinError, match="needs at least two; got loss"):
            choose_detector(run, ("loss",), CalibrationConfig(progress=False))


def test_detectors_that_give_nan_are_not_chosen(distmult_run, spied):
    run, *_ = _spy_on_planted(spied, distmult_run)
    spied["auc_order"] = {"memorization": float("nan"), "self_influence": 1.0}
    best, aucs = choose_detector(run, DETECTORS, CalibrationConfig(progress=False))
    assert math.isnan(aucs["memorization"]) and best == "self_influence"
    spied["auc_order"] = {name: float("nan") for name in DETECTORS}
    with pytest.raises(KGTracinError, match="no detector scored the planted fakes"):
        choose_detector(run, DETECTORS, CalibrationConfig(progress=False))


@pytest.mark.parametrize("plant", [None, "triples"])
def test_audit_order_by_auto(distmult_run, tmp_path, capsys, monkeypatch, plant):
    """The CLI plants what ``--plant`` says (plausible fakes by default), orders the rows by the detector the
    calibration chose, and says so."""
    chosen = {}
    original = calibration.choose_detector

    def spy(*args, **kwargs):
        chosen["args"] = args
        chosen["result"] = original(*args, **kwargs)
        return chosen["result"]

    monkeypatch.setattr(calibration, "choose_detector", spy)
    out = tmp_path / "audit.tsv"
    code, stdout, err = run_cli(
        capsys, "audit", distmult_run, "--order-by", "auto", *(["--plant", plant] if plant else []), "--output", out
    )
    assert code == 0, err
    assert chosen["args"][2].plant == (plant or "plausible")
    best, aucs = chosen["result"]
    assert set(aucs) == set(DETECTORS)
    assert f"ordering by {best}" in stdout and f"most suspicious first by {best}" in stdout
    frame = pd.read_csv(out, sep="\t")
    assert frame[best].is_monotonic_decreasing and len(frame) == load_run(distmult_run).training_triples.shape[0]


def test_audit_order_by_auto_needs_the_runs_recipe(distmult_run_copy, tmp_path, capsys):
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    del manifest["training"]
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run_copy, "--order-by", "auto", "--output", out)
    assert_clean_error(code, err, "--order-by auto retrains", "recipe", "kgtracin train")
    assert not out.exists()


def test_plant_with_another_order_is_refused(distmult_run, tmp_path, capsys):
    out = tmp_path / "audit.tsv"
    code, _, err = run_cli(capsys, "audit", distmult_run, "--plant", "plausible", "--order-by", "loss", "--output", out)
    assert_clean_error(code, err, "--plant", "--order-by auto", "loss")
    assert not out.exists()


def test_the_smallest_choices_are_allowed(distmult_run, spied):
    """Two detectors are enough to choose from, and one planted fake is enough to choose by."""
    run, *_ = _spy_on_planted(spied, distmult_run)
    spied["auc_order"] = {"loss": 1.0}
    best, aucs = choose_detector(run, ("memorization", "loss"), CalibrationConfig(progress=False))
    assert set(aucs) == {"memorization", "loss"} and best == "loss"
    one = 0.6 / run.training_triples.shape[0]  # round(one * N) == 1
    known = {tuple(t) for split in run.splits.values() for t in split.tolist()}
    planted, fake = corrupt_plausible(run.training_triples, one, 0, known)
    assert int(fake.sum()) == 1
    fakes = {tuple(t) for t in planted[fake].tolist()}
    spied["fake"] = lambda triples: torch.tensor([tuple(t) in fakes for t in triples.tolist()])
    best, aucs = choose_detector(run, DETECTORS, CalibrationConfig(fraction=one, progress=False))
    assert int(spied["fake"](spied["triples"]).sum()) == 1 and best == "loss" and aucs["loss"] == 1.0


def test_the_retraining_is_announced_after_every_refusal_and_before_it_starts(distmult_run, spied):
    run, *_ = _spy_on_planted(spied, distmult_run)
    seen_at_announcement = []

    def announce() -> None:
        seen_at_announcement.append("config" in spied)  # has fit run yet?

    choose_detector(run, DETECTORS, CalibrationConfig(progress=False), before_training=announce)
    assert seen_at_announcement == [False] and "config" in spied
    with pytest.raises(KGTracinError, match="needs at least two"):
        choose_detector(run, ("loss",), CalibrationConfig(progress=False), before_training=announce)
    assert seen_at_announcement == [False]  # a refusal is not announced as a retraining
