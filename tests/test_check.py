"""``explain --check K``: each explanation's cheap check (the head relearned with and without its first K
proponents), its wiring to :mod:`kgtracin.evaluation.check`, and its refusals."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from kgtracin.evaluation.check import CheckConfig, check_explanations, check_ranks, check_unsupported
from kgtracin.predictions import KnownTriples
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli


def test_explain_check_reports_the_checks_ranks(nations_run, tmp_path, capsys):
    out = tmp_path / "influence.tsv"
    code, stdout, err = run_cli(
        capsys, "explain", nations_run, "--split", "test", "--limit", "4", "--top-k", "3", "--check", "2",
        "--output", out,
    )  # fmt: skip
    assert code == 0, err
    frame = pd.read_csv(out, sep="\t")
    assert {"check_rank_with", "check_rank_without"} <= set(frame.columns)
    assert "check: filtered rank" in stdout and "without the first 2 proponent(s) of each checked triple" in stdout
    run = load_run(nations_run)
    test = run.splits["testing"][:4]
    # the explanations the check removed: each test triple's first 2 proponents, as the output file names them
    proponents = frame[(frame["kind"] == "proponent") & (frame["rank"] <= 2)]
    rows = [proponents[proponents["test_index"] == j]["train_index"].tolist() for j in range(4)]
    assert any(rows)
    rate = run.manifest["training"]["learning_rate"]
    expected = check_explanations(
        run.model, run.training_triples, test, rows, KnownTriples(run.splits.values()), CheckConfig(learning_rate=rate)
    )
    per_test = frame.drop_duplicates("test_index").set_index("test_index")
    for j, check in enumerate(expected):
        assert per_test.loc[j, "check_rank_with"] == check["rank_with"]
        assert per_test.loc[j, "check_rank_without"] == check["rank_without"]
    assert "at learning rate 0.01" in stdout and "without the first 2 proponent(s) of every test triple" in stdout
    reached = int((per_test["check_rank_with"] <= per_test["test_rank"]).sum())
    assert f"reach the model's own rank for {reached} of 4 test triple(s)" in stdout
    # every row of a test triple carries its test triple's check
    assert (frame.groupby("test_index")["check_rank_without"].nunique() == 1).all()


def test_check_ranks_take_only_positive_proponents(nations_run):
    """Fillers (-1, whatever their score), entries of the wrong sign and entries past k are not part of the
    explanation the check removes."""
    run = load_run(nations_run)
    test = run.splits["testing"][:2]
    known, config = KnownTriples(run.splits.values()), CheckConfig(steps=3)
    rows = torch.tensor([[5, -1, 7, 21], [9, 11, 13, 17]])
    scores = torch.tensor([[2.0, 1.5, 1.0, 0.5], [0.5, -0.1, 0.2, 0.1]])
    with_, without = check_ranks(run.model, run.training_triples, test, rows, scores, 3, known, config)
    expected = check_explanations(run.model, run.training_triples, test, [[5, 7], [9, 13]], known, config)
    assert with_.tolist() == [c["rank_with"] for c in expected]
    assert without.tolist() == [c["rank_without"] for c in expected]
    assert with_.dtype == torch.float64 and (with_ >= 1).all() and (without >= 1).all()
    _, first_only = check_ranks(run.model, run.training_triples, test, rows, scores, 1, known, config)
    expected = check_explanations(run.model, run.training_triples, test, [[5], [9]], known, config)
    assert first_only.tolist() == [c["rank_without"] for c in expected]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--check", "4", "--top-k", "3"], ["--check 4", "--top-k 3"]),
        (["--check", "0"], ["--check"]),
    ],
)
def test_explain_check_refuses_in_one_line(nations_run, tmp_path, capsys, args, words):
    out = tmp_path / "influence.tsv"
    code, _, err = run_cli(capsys, "explain", nations_run, "--split", "test", "--limit", "2", *args, "--output", out)
    assert_clean_error(code, err, *words)
    assert not out.exists()


def test_explain_check_refuses_head_predictions(nations_run, tmp_path, capsys):
    run = load_run(nations_run)
    relation, tail = run.labels.to_labels(run.splits["testing"][:1])[0, 1:]
    out = tmp_path / "influence.tsv"
    code, _, err = run_cli(
        capsys, "explain", nations_run, "--predict-head", relation, tail, "--check", "1", "--output", out
    )
    assert_clean_error(code, err, "--check", "--predict-head")
    assert not out.exists()


def test_check_refuses_entity_representations_it_cannot_relearn():
    from pykeen.datasets import Nations
    from pykeen.models import RGCN

    model = RGCN(triples_factory=Nations().training, random_seed=0)
    reason = check_unsupported(model)
    assert reason is not None and "not a plain embedding table" in reason


def test_explain_check_refusal_of_a_model_reaches_the_user(nations_run, tmp_path, capsys, monkeypatch):
    from kgtracin.evaluation import check

    monkeypatch.setattr(check, "check_unsupported", lambda model: "its entity rows are computed")
    out = tmp_path / "influence.tsv"
    code, _, err = run_cli(
        capsys, "explain", nations_run, "--split", "test", "--limit", "2", "--check", "1", "--output", out
    )
    assert_clean_error(code, err, "--check cannot run", "its entity rows are computed")
    assert not out.exists()


@pytest.mark.parametrize("recorded", [0.003, None])
def test_explain_check_takes_the_runs_learning_rate(nations_run, tmp_path, capsys, recorded):
    """The check learns at the rate the run's manifest records, else at kgtracin's default, and says which."""
    import json
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(nations_run, run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if recorded is None:
        del manifest["training"]["learning_rate"]
    else:
        manifest["training"]["learning_rate"] = recorded
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "influence.tsv"
    code, stdout, err = run_cli(
        capsys, "explain", run_dir, "--split", "test", "--limit", "2", "--check", "1", "--output", out
    )
    assert code == 0, err
    assert f"at learning rate {0.01 if recorded is None else recorded:g}," in stdout


@pytest.mark.parametrize("start", ["zero", "mean", "random"])
def test_mimic_rows_start_where_asked_and_nothing_else_moves(nations_run, start):
    """The relearned rows' first value (compared in ``benchmarks/check_variants.py``); with no step taken, every
    other weight is the model's, and the model itself is untouched."""
    from kgtracin.evaluation.check import _mimic

    run = load_run(nations_run)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    rows = torch.tensor([0, 3])
    mimic = _mimic(run.model, rows, run.training_triples[:0], CheckConfig(steps=0), start)
    assert all(torch.equal(v, before[k]) for k, v in run.model.state_dict().items())
    others = torch.ones(run.model.num_entities, dtype=torch.bool)
    others[rows] = False
    tables = [name for name in before if name.startswith("entity_representations.")]
    assert tables
    for name, value in mimic.state_dict().items():
        old = before[name]
        if name not in tables:
            assert torch.equal(value, old)
            continue
        assert torch.equal(value[others], old[others])
        expected = {"zero": torch.zeros_like(old[rows]), "mean": old.mean(0).expand_as(old[rows])}.get(start)
        if expected is None:  # random: normal with the table's spread, seeded
            again = _mimic(run.model, rows, run.training_triples[:0], CheckConfig(steps=0), start)
            assert torch.equal(value[rows], again.state_dict()[name][rows]) and value[rows].abs().sum() > 0
        else:
            assert torch.equal(value[rows], expected)


def test_mimic_refuses_an_unknown_start(nations_run):
    from kgtracin.evaluation.check import _mimic

    run = load_run(nations_run)
    with pytest.raises(ValueError, match="unknown start 'ones'"):
        _mimic(run.model, torch.tensor([0]), run.training_triples[:0], CheckConfig(), "ones")


def test_check_reuses_the_ranks_with_every_fact(nations_run, monkeypatch):
    """The ranks with every fact do not depend on the explanations: given them, the check relearns the heads once
    (without the explanations) and returns what a fresh check returns."""
    from kgtracin.evaluation import check

    run = load_run(nations_run)
    test = run.splits["testing"][:3]
    known, config = KnownTriples(run.splits.values()), CheckConfig(steps=3)
    first = check_explanations(run.model, run.training_triples, test, [[5], [9], []], known, config)
    fresh = check_explanations(run.model, run.training_triples, test, [[5, 7], [9, 13], [2]], known, config)
    calls = []
    original = check._mimic
    monkeypatch.setattr(check, "_mimic", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    ranks_with = [c["rank_with"] for c in first]
    reused = check_explanations(
        run.model, run.training_triples, test, [[5, 7], [9, 13], [2]], known, config, ranks_with
    )
    assert reused == fresh and len(calls) == 1
