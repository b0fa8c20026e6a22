"""The end-to-end protocol (``kgtracin evaluate --protocol end-to-end``): the run's own recipe, unions, resuming."""

from __future__ import annotations

import json

import pytest
import torch

from kgtracin.errors import KGTracinError
from kgtracin.evaluation import end_to_end
from kgtracin.evaluation.check import check_explanations, run_check_config
from kgtracin.evaluation.end_to_end import (
    EndToEndConfig,
    Variant,
    fingerprint,
    linking_rows,
    parse_variant,
    run_end_to_end,
)
from kgtracin.evaluation.workspace import MARKER, Workspace
from kgtracin.predictions import KnownTriples
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli


def spy_retrainings(monkeypatch) -> list:
    """Record every retraining of the end-to-end protocol, as ``(deleted rows, epochs)``, and let it run."""
    calls = []
    original = end_to_end._Retrainer.__call__

    def counting(self, deleted, epochs=None):
        calls.append((tuple(deleted), epochs))
        return original(self, deleted, epochs)

    monkeypatch.setattr(end_to_end._Retrainer, "__call__", counting)
    return calls


def test_parse_variant():
    assert parse_variant("default") == Variant()
    bce = parse_variant("loss=bce, normalize=none")
    assert dict(bce.options) == {"loss": "bce", "normalize": None}
    both = parse_variant("parameters=entity_representations.*+interaction.*")
    assert dict(both.options)["parameters"] == ("entity_representations.*", "interaction.*")
    assert parse_variant("normalize=train,loss=bce") == parse_variant("loss=bce,normalize=train")


@pytest.mark.parametrize(("text", "word"), [("los=bce", "'los'"), ("loss", "name=value"), ("loss=hinge", "hinge")])
def test_parse_variant_refuses(text, word):
    with pytest.raises(KGTracinError, match=word):
        parse_variant(text)


def test_linking_rows_against_brute_force():
    train = torch.tensor([[0, 0, 1], [1, 2, 0], [0, 1, 2], [2, 0, 1], [1, 0, 1], [0, 3, 1]])
    target = torch.tensor([0, 5, 1])
    expected = [i for i, (h, _, t) in enumerate(train.tolist()) if {h, t} == {0, 1}]
    assert linking_rows(train, target).tolist() == expected == [0, 1, 5]


def test_workspace_resumes_and_refuses(tmp_path):
    folder = tmp_path / "ev"
    space = Workspace(folder, {"a": 1})
    assert not space.resumed and (folder / MARKER).is_file()
    space.write("step.json", {"x": 2})
    again = Workspace(folder, {"a": 1})
    assert again.resumed and again.read("step.json") == {"x": 2} and again.read("missing.json") is None
    with pytest.raises(KGTracinError, match="other settings"):
        Workspace(folder, {"a": 2})
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(KGTracinError, match="not empty"):
        Workspace(foreign, {"a": 1})
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "keep me"


def _filtered_tail_rank(model, triple, known: KnownTriples) -> float:
    """Independent: score every tail with ``score_hrt`` one by one, filter, and rank realistically."""
    h, r, t = triple.tolist()
    candidates = torch.tensor([[h, r, e] for e in range(model.num_entities)])
    with torch.no_grad():
        scores = model.score_hrt(candidates).view(-1)
    drop = set(known.tails(h, r).tolist()) - {t}
    own = float(scores[t])
    others = [float(s) for e, s in enumerate(scores) if e not in drop and e != t]
    return 1.0 + sum(s > own for s in others) + 0.5 * sum(s == own for s in others)


def test_retraining_with_nothing_deleted_is_the_run(distmult_run):
    """The retraining follows the run's recipe step for step: deleting nothing gives model.pt bit for bit."""
    run = load_run(distmult_run)
    retrain = end_to_end._Retrainer(run, progress=False)
    model = retrain([])
    saved = torch.load(distmult_run / "model.pt", weights_only=True)
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert retrain.reproduces_first_checkpoint() is True


def test_retraining_leaves_out_exactly_the_deleted_rows(distmult_run, monkeypatch):
    run = load_run(distmult_run)
    seen = []
    monkeypatch.setattr("kgtracin.training.fit", lambda model, config, factory, **kw: seen.append(factory) or [])
    end_to_end._Retrainer(run, progress=False)([3, 0, 17])
    kept = seen[0].mapped_triples
    expected = torch.cat([run.training_triples[1:3], run.training_triples[4:17], run.training_triples[18:]])
    assert torch.equal(kept, expected)


def test_end_to_end_measures_resumes_and_reports(distmult_run, tmp_path, monkeypatch):
    run = load_run(distmult_run)
    config = EndToEndConfig(predictions=4, ks=(1, 2), variants=(Variant(), parse_variant("loss=bce")), progress=False)
    space = Workspace(tmp_path / "ev", fingerprint(run, config))
    calls = spy_retrainings(monkeypatch)
    result = run_end_to_end(run, space, config)
    targets = torch.tensor(result["predictions"])
    known = KnownTriples(run.splits.values())
    # the predictions are ranked first by the run's model, checked independently
    assert all(_filtered_tail_rank(run.model, t, known) == 1.0 for t in targets)
    assert result["before"] == {"hits_at_1": 1.0, "mrr": 1.0}
    assert result["control"]["reproducible"] is True
    # one epoch for the reproducibility check, then one retraining per arm and k: 2 variants + NH + RG, 2 ks
    assert calls[0] == ((), 1) and len(calls) == 1 + 8
    arms = {(a["arm"], a["k"]): a for a in result["arms"]}
    assert set(arms) == {
        (n, k) for k in (1, 2) for n in ("TracIn (default)", "TracIn (loss=bce)", f"NH-{k}", f"RG-{k}")
    }
    for number, variant in enumerate(config.variants):
        explanation = json.loads((tmp_path / "ev" / f"explanation-{number}.json").read_text())
        for k in (1, 2):
            union = {
                i
                for rows, scores in zip(explanation["indices"], explanation["scores"])
                for i, s in zip(rows[:k], scores[:k])
                if s > 0
            }
            assert arms[variant.name, k]["deleted"] == len(union)
            assert (tuple(sorted(union)), None) in calls
            # each k's check, against a fresh check of the same explanations (the ranks with every fact are shared)
            rows = [
                [i for i, s in zip(r[:k], sc[:k]) if s > 0]
                for r, sc in zip(explanation["indices"], explanation["scores"])
            ]
            fresh = check_explanations(
                run.model, run.training_triples, targets, rows, known, run_check_config(run, steps=config.check_steps)
            )
            assert explanation["check"][str(k)] == fresh
    for arm in arms.values():
        assert arm["delta_hits_at_1"] == arm["hits_at_1"] - 1.0 and 0 <= arm["hits_at_1"] <= 1
    # an interrupted evaluation: one arm's file is missing; the rerun retrains that arm only
    (tmp_path / "ev" / "arm-3.json").unlink()
    calls.clear()
    again = run_end_to_end(run, Workspace(tmp_path / "ev", fingerprint(run, config)), config)
    drop = lambda arms: [{k: v for k, v in a.items() if k != "seconds"} for a in arms]
    assert len(calls) == 1 and drop(again["arms"]) == drop(result["arms"])


def test_end_to_end_cli(distmult_run, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ("evaluate", distmult_run, "--protocol", "end-to-end", "--targets", "3", "--output", out)
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "| NH-1 | 1 |" in stdout and "| RG-1 | 1 |" in stdout and "| TracIn (default) | 1 |" in stdout
    table = json.loads((out / "end-to-end.json").read_text())
    assert len(table["predictions"]) == 3 and len(table["arms"]) == 3
    code, stdout, err = run_cli(capsys, *args)  # finished: the rerun reads every step back
    assert (
        code == 0 and "resuming" in err and json.loads((out / "end-to-end.json").read_text())["arms"] == table["arms"]
    )
    code, _, err = run_cli(capsys, *args[:-1], out, "--k", "2")
    assert_clean_error(code, err, "other settings")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--protocol", "end-to-end", "--retrain", "isolated"), ["--retrain", "deletion protocol"]),
        (("--protocol", "end-to-end", "--noisy", "0.1"), ["--noisy"]),
        (("--variant", "loss=bce"), ["--variant", "end-to-end"]),
        (("--protocol", "end-to-end", "--variant", "los=bce"), ["'los'"]),
    ],
)
def test_end_to_end_bad_options(distmult_run, tmp_path, capsys, args, words):
    code, _, err = run_cli(capsys, "evaluate", distmult_run, "--output", tmp_path / "ev", *args)
    assert_clean_error(code, err, *words)
    assert not (tmp_path / "ev").exists()


def test_end_to_end_needs_the_runs_recipe(distmult_run_copy, tmp_path, capsys):
    manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
    del manifest["training"]
    (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(
        capsys, "evaluate", distmult_run_copy, "--protocol", "end-to-end", "--output", tmp_path / "ev"
    )
    assert_clean_error(code, err, "recipe", "kgtracin train")
    assert not (tmp_path / "ev").exists()


def test_check_relearns_the_heads_without_the_explanations(distmult_run):
    """The cheap check, written out independently: the heads' rows as the only free tensor (zero at first), Adam
    on the mean 1-N cross-entropy (both directions) of the facts mentioning a head, without the explanations, through
    ``torch.func.functional_call``; then each prediction's filtered rank."""
    import copy

    from torch import nn
    from torch.nn import functional as F

    from kgtracin.evaluation.check import CheckConfig, check_explanations

    run = load_run(distmult_run)
    train, targets = run.training_triples, run.splits["testing"][:3]
    known = KnownTriples(run.splits.values())
    explanations = [[0, 5], [7], []]
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    config = CheckConfig(steps=4, learning_rate=0.1, chunk=50)
    result = check_explanations(run.model, train, targets, explanations, known, config)
    assert all(torch.equal(v, before[k]) for k, v in run.model.state_dict().items())  # the model is untouched

    name = "m.entity_representations.0._embeddings.weight"

    class Scores(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.m = model

        def forward(self, batch, head_side):
            return self.m.score_h(batch) if head_side else self.m.score_t(batch)

    heads = sorted(set(targets[:, 0].tolist()))
    for removed, key in (({0, 5, 7}, "rank_without"), (set(), "rank_with")):
        rows = [i for i, (h, _, t) in enumerate(train.tolist()) if {h, t} & set(heads) and i not in removed]
        model = copy.deepcopy(run.model).eval()
        wrapper, table = Scores(model), model.entity_representations[0]._embeddings.weight.detach()
        free = torch.zeros(len(heads), table.shape[1], requires_grad=True)
        optimizer = torch.optim.Adam([free], lr=0.1)
        batch = train[rows]
        for _ in range(4):
            optimizer.zero_grad()
            weights = {name: table.index_put((torch.tensor(heads),), free)}
            tails = F.cross_entropy(
                torch.func.functional_call(wrapper, weights, (batch[:, :2], False)), batch[:, 2], reduction="sum"
            )
            heads_ = F.cross_entropy(
                torch.func.functional_call(wrapper, weights, (batch[:, 1:], True)), batch[:, 0], reduction="sum"
            )
            ((tails + heads_) / len(rows)).backward()
            optimizer.step()
        with torch.no_grad():
            table.copy_(table.index_put((torch.tensor(heads),), free))
        expected = [_filtered_tail_rank(model, t, known) for t in targets]
        assert [r[key] for r in result] == expected


def test_end_to_end_skips_the_check_where_it_cannot_run(distmult_run, tmp_path, monkeypatch):
    """A model whose entity rows are computed (RGCN, NodePiece) is retrained and measured; its check is skipped,
    and the report says why."""
    from kgtracin.evaluation import check
    from kgtracin.evaluation.outputs import end_to_end_markdown

    monkeypatch.setattr(check, "check_unsupported", lambda model: "its entity rows are computed")
    monkeypatch.setattr(check, "check_explanations", lambda *a, **k: pytest.fail("the check ran"))
    run = load_run(distmult_run)
    config = EndToEndConfig(predictions=2, baselines=False, progress=False)
    result = run_end_to_end(run, Workspace(tmp_path / "ev", fingerprint(run, config)), config)
    assert result["check_skipped"] == "its entity rows are computed"
    assert "check" not in json.loads((tmp_path / "ev" / "explanation-0.json").read_text())
    assert "check" not in result["arms"][0]
    text = end_to_end_markdown(
        {"run": "run", "command": "kgtracin evaluate", **result}, run.labels, run.training_triples
    )
    assert "The check did not run: its entity rows are computed." in text


def test_variant_checkpoints(distmult_run):
    """``checkpoints=first|last`` sums TracIn over one of the run's checkpoints only."""
    from kgtracin.config import EXPLAIN_CANDIDATES
    from kgtracin.tracin import TracIn

    last = parse_variant("checkpoints=last, loss=bce")
    assert last == Variant((("loss", "bce"),), checkpoints="last")
    assert last.name == "TracIn (loss=bce, checkpoints=last)"
    assert parse_variant("checkpoints=all") == Variant()
    with pytest.raises(KGTracinError, match="checkpoints must be all, first, last"):
        parse_variant("checkpoints=middle")
    run = load_run(distmult_run)
    assert len(run.checkpoints) == 2
    targets = run.splits["testing"][:3]
    config = EndToEndConfig(progress=False)
    for variant, kept in ((Variant(checkpoints="first"), [0]), (Variant(checkpoints="last"), [1]), (Variant(), [0, 1])):
        record = end_to_end._explain(run, variant, targets, 4, config)
        expected = (
            TracIn(
                run.model,
                run.training_triples,
                [run.checkpoints[i] for i in kept],
                labels=run.labels,
                loss=run.tracin_loss,
                candidates=EXPLAIN_CANDIDATES,
                progress=False,
            )
            .influence(targets, top_k=4)
            .proponents
        )
        assert record["indices"] == expected.indices.tolist()
        assert record["scores"] == expected.scores.double().tolist()
    # refused, with a reason, for a run of one checkpoint
    from types import SimpleNamespace

    from kgtracin.evaluation.variants import variants_unsupported

    single = SimpleNamespace(checkpoints=run.checkpoints[:1], model=run.model)
    assert "two checkpoints or more; this one has 1" in variants_unsupported(single, [Variant(checkpoints="last")])
    assert variants_unsupported(single, [Variant()]) is None and variants_unsupported(run, [last]) is None
    # the two checkpoints' influences differ, so the test can tell them apart
    first = end_to_end._explain(run, Variant(checkpoints="first"), targets, 4, config)
    assert first["scores"] != end_to_end._explain(run, Variant(checkpoints="last"), targets, 4, config)["scores"]
