"""The end-to-end protocol's retraining in the run's own batches: only the deleted facts differ."""

from __future__ import annotations

import json

import pytest
import torch

from kgtracin.evaluation import end_to_end
from kgtracin.evaluation.batches import same_batches_loop, same_batches_unsupported
from kgtracin.runs import load_run

from .test_cli import assert_clean_error, run_cli


def _batches(loader) -> list[tuple[list[tuple[int, int]], torch.Tensor]]:
    """One epoch of a PyKEEN LCWA loader: each batch's (pair, ...) and its target rows."""
    return [([tuple(p) for p in batch["pairs"].tolist()], batch["target"]) for batch in loader]


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_same_batches_are_the_runs_less_the_deleted(distmult_run, inverse, drop_last):
    """Independent: PyKEEN's own loader over the whole training set, from the same random state, gives the
    batches; the same-batches loader over the kept facts must give each of them with the deleted facts' targets
    cleared and the pairs left with no target dropped."""
    from pykeen.training import LCWATrainingLoop
    from pykeen.triples import TriplesFactory

    run = load_run(distmult_run)
    train = run.training_triples
    make = lambda rows: TriplesFactory(
        rows, run.labels.entity_to_id, run.labels.relation_to_id, create_inverse_triples=inverse
    )
    # delete every fact of one (head, relation) pair (the pair leaves its batch) and a few others
    h, r = train[0, :2].tolist()
    deleted = set(((train[:, 0] == h) & (train[:, 1] == r)).nonzero().view(-1).tolist()) | {5, 40, 41, 300}
    keep = torch.tensor([i not in deleted for i in range(train.shape[0])])
    full, kept = make(train), make(train[keep])
    gone = {tuple(t) for t in train[~keep].tolist()}
    if inverse:  # the inverse triple (t, r + 1, h) of each, with PyKEEN's internal ids (r is 2r there)
        gone = {(a, 2 * b, c) for a, b, c in gone} | {(c, 2 * b + 1, a) for a, b, c in gone}
    options = dict(batch_size=64, drop_last=drop_last, shuffle=True, num_workers=0, pin_memory=False)
    torch.manual_seed(7)
    expected_loader = LCWATrainingLoop(model=run.model, triples_factory=full)._create_training_data_loader(
        full, sampler=None, **options
    )
    expected = [_batches(expected_loader) for _ in range(2)]  # two epochs: a fresh permutation each
    torch.manual_seed(7)
    loop = same_batches_loop(train)(model=run.model, triples_factory=kept)
    actual = [_batches(loop._create_training_data_loader(kept, sampler=None, **options)) for _ in range(2)]
    assert expected[0] != expected[1]
    removed_pairs = 0
    for epoch_expected, epoch_actual in zip(expected, actual):
        assert len(epoch_actual) == len(epoch_expected)
        for (pairs, targets), (kept_pairs, kept_targets) in zip(epoch_expected, epoch_actual):
            rows = []
            for pair, target in zip(pairs, targets):
                target = target.clone()
                for tail in target.nonzero().view(-1).tolist():
                    if (*pair, tail) in gone:
                        target[tail] = 0
                if target.any():
                    rows.append((pair, target))
            removed_pairs += len(pairs) - len(rows)
            assert kept_pairs == [pair for pair, _ in rows]
            assert torch.equal(kept_targets, torch.stack([t for _, t in rows]))
    assert removed_pairs >= 2  # the emptied pair left its batch in each epoch


@pytest.mark.parametrize("model", ["DistMult", "ComplEx"])
def test_same_batches_with_nothing_deleted_is_the_run(run_factory, model):
    run_dir = run_factory(model, model == "ComplEx")
    run = load_run(run_dir)
    retrain = end_to_end._Retrainer(run, progress=False, batches="same")
    model = retrain([])
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert retrain.reproduces_first_checkpoint() is True


def _build_drawing_by_triples(build):
    """``build_model``, then as many random draws as the factory has triples (as NodePiece's tokenizer draws)."""

    def built(config, kwargs, factory):
        model = build(config, kwargs, factory)
        torch.rand(factory.num_triples)
        return model

    return built


@pytest.mark.parametrize("draws_by_triples", [False, True])
def test_same_batches_inside_the_training_loop(distmult_run, monkeypatch, draws_by_triples):
    """Every batch of a retraining without some facts, recorded inside PyKEEN's loop over all epochs, is the run's
    batch less the deleted pairs, also when building the model draws random numbers by its triples, which moves
    the random state the batches are drawn from."""
    from pykeen.training.callbacks import TrainingCallback

    import kgtracin.training as training

    class Record(TrainingCallback):
        def __init__(self, into):
            super().__init__()
            self.into = into

        def on_batch(self, epoch, batch, batch_loss, **kwargs):
            self.into.append((epoch, [tuple(p) for p in batch["pairs"].tolist()]))

    seen: list = []
    fit = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **kw: fit(*a, **kw, callbacks=[Record(seen)]))
    run = load_run(distmult_run)
    train = run.training_triples
    if draws_by_triples:  # the run's model, and every retraining's, built this way
        monkeypatch.setattr(training, "build_model", _build_drawing_by_triples(training.build_model))
    end_to_end._Retrainer(run, progress=False)([])  # the run's batches (nothing deleted: the run, bit for bit)
    expected, seen[:] = list(seen), []
    h, r = train[0, :2].tolist()
    deleted = ((train[:, 0] == h) & (train[:, 1] == r)).nonzero().view(-1).tolist() + [7, 8]
    end_to_end._Retrainer(run, progress=False, batches="same")(deleted)
    actual = seen
    assert len({e for e, _ in expected}) == run.manifest["training"]["epochs"] >= 2
    left = {(a, b) for a, b, _ in train[[i for i in range(train.shape[0]) if i not in set(deleted)]].tolist()}
    filtered = [(e, [p for p in pairs if p in left]) for e, pairs in expected]
    assert sum(len(p) for _, p in filtered) < sum(len(p) for _, p in expected)  # the emptied pair left its batches
    assert actual == [(e, p) for e, p in filtered if p]


def test_same_batches_refusals(nations_run, distmult_run):
    assert same_batches_unsupported("lcwa", load_run(distmult_run).model) is None
    assert "slcwa" in same_batches_unsupported("slcwa", load_run(distmult_run).model)
    reason = same_batches_unsupported("lcwa", load_run(nations_run).model)
    assert "ConvE" in reason and "dropout" in reason


def test_same_batches_cli(distmult_run, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ("evaluate", distmult_run, "--protocol", "end-to-end", "--targets", "2", "--output", out)
    code, stdout, err = run_cli(capsys, *args, "--batches", "same")
    assert code == 0, err
    assert "the run's own" in stdout and "| RG-1 | 1 |" in stdout
    assert json.loads((out / "end-to-end.json").read_text())["batches"] == "same"
    code, _, err = run_cli(capsys, *args)  # the same folder, reshuffled batches: other settings
    assert_clean_error(code, err, "other settings")


@pytest.mark.parametrize(
    ("edit", "args", "words"),
    [
        (None, ("--batches", "same"), ["--batches", "end-to-end"]),
        ("slcwa", ("--protocol", "end-to-end", "--batches", "same"), ["lcwa", "slcwa"]),
    ],
)
def test_same_batches_bad_options(distmult_run_copy, tmp_path, capsys, edit, args, words):
    if edit:
        manifest = json.loads((distmult_run_copy / "manifest.json").read_text())
        manifest["training"]["training_loop"] = edit
        (distmult_run_copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "evaluate", distmult_run_copy, "--output", tmp_path / "ev", *args)
    assert_clean_error(code, err, *words)
    assert not (tmp_path / "ev").exists()


def test_same_batches_refuses_dropout_cleanly(nations_run, tmp_path, capsys):
    args = ("evaluate", nations_run, "--protocol", "end-to-end", "--batches", "same", "--output", tmp_path / "ev")
    code, _, err = run_cli(capsys, *args)
    assert_clean_error(code, err, "dropout", "--batches reshuffled")
    assert not (tmp_path / "ev").exists()
