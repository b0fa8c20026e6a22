"""The quality machinery is correct: losses follow the run, detectors, ranks, AUC, isolated retraining.

These tests check correctness against brute force or invariants, never a quality threshold: quality figures
come from ``kgtracin evaluate`` and ``benchmarks/``.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from kgtracin import KGTracinError, TracIn
from kgtracin.audit import DETECTORS, audit_frame, detector_scores
from kgtracin.evaluation import RetrainConfig, Retrainer
from kgtracin.evaluation.deletion import far_rows, neighbour_rows
from kgtracin.losses import loss_for_training
from kgtracin.predictions import KnownTriples, tail_view
from kgtracin.runs import load_run

from .conftest import assert_exact


@pytest.fixture(scope="module")
def run(run_factory):
    return load_run(run_factory("DistMult", False))


def test_training_loss_picks_the_tracin_loss(run):
    assert loss_for_training("CrossEntropyLoss") == "softmax"
    assert loss_for_training("SoftplusLoss") == "bce" and loss_for_training("BCEWithLogitsLoss") == "bce"
    # PyKEEN's names in any spelling: case, underscores and hyphens do not matter
    assert loss_for_training("cross_entropy") == loss_for_training("Cross-Entropy") == "softmax"
    assert loss_for_training("margin_ranking") == "bce" and loss_for_training(None) == "bce"
    assert run.manifest["training"]["loss"] == "CrossEntropyLoss" and run.tracin_loss == "softmax"
    tracin = TracIn.from_run(run.path, progress=False)
    assert tracin.config.loss == "softmax" and tracin.config.normalize is None


def test_manifest_has_the_evaluation_and_checkpoints(run):
    evaluation = run.manifest["evaluation"]
    assert evaluation["split"] == "testing" and evaluation["num_triples"] == run.splits["testing"].shape[0]
    assert 0 < evaluation["mrr"] <= 1 and evaluation["hits_at_1"] <= evaluation["hits_at_3"] <= evaluation["hits_at_10"]
    assert len(run.checkpoints) == 2  # min(5, epochs=2)


def test_filtered_rank_matches_brute_force(run):
    model, test = run.model, run.splits["testing"][:20]
    known = KnownTriples(run.splits.values())
    scores, ranks = tail_view(model, test, known)
    all_known = {tuple(t) for part in run.splits.values() for t in part.tolist()}
    with torch.no_grad():
        full = model.predict_t(test[:, :2])
    for i, (h, r, t) in enumerate(test.tolist()):
        own = full[i, t]
        others = [full[i, e] for e in range(model.num_entities) if e != t and (h, r, e) not in all_known]
        expected = 1 + sum(float(o > own) for o in others) + 0.5 * sum(float(o == own) for o in others)
        assert ranks[i] == expected
        assert torch.isclose(scores[i], own)


def test_total_influence_is_the_column_sum(run):
    tracin = TracIn(run.model.double(), run.training_triples[:80], progress=False, loss="softmax")
    valid = run.splits["validation"][:7]
    assert_exact(tracin.total_influence(valid), tracin.scores(valid).sum(dim=0))


def test_detectors_match_their_definitions(run):
    """Each detector against its definition, computed here: TracIn sums from ``scores`` (memorization from the
    loop reference's training x training matrix), norms from ``self_influence``, and the plain loss from the
    model's own scoring functions, in float64."""
    from .test_models import _reference_loss

    model = copy.deepcopy(run.model).double()
    train, valid = run.training_triples[:60], run.splits["validation"][:5]
    scores = detector_scores(model, train, valid, run.checkpoints, DETECTORS, loss="softmax", progress=False)
    raw = sum(TracIn(model, train, [c], loss="softmax", progress=False).scores(valid) for c in run.checkpoints)
    assert_exact(scores["validation"], -raw.sum(dim=0))
    cosine = 0
    for c in run.checkpoints:
        one = TracIn(model, train, [c], loss="softmax", progress=False)
        train_norm = (one.self_influence() / c.learning_rate).sqrt()
        test_norm = (
            TracIn(model, valid, [c], loss="softmax", progress=False).self_influence() / c.learning_rate
        ).sqrt()
        cosine = cosine + one.scores(valid) / train_norm.unsqueeze(0) / test_norm.unsqueeze(1)
    assert_exact(scores["validation_cosine"], -cosine.sum(dim=0))
    among = sum(
        TracIn(model, train, [c], method="loop", loss="softmax", progress=False).scores(train) for c in run.checkpoints
    )
    assert_exact(scores["self_influence"], among.diagonal())
    assert_exact(scores["memorization"], among.diagonal() / among.sum(dim=0).abs())
    with torch.no_grad():
        expected_loss = torch.stack([_reference_loss(model.eval(), hrt, "softmax") for hrt in train])
    assert_exact(scores["loss"], expected_loss)
    rows = train.tolist()
    expected_support = [
        -math.log(sum(other[:2] == row[:2] for other in rows)) - math.log(sum(other[1:] == row[1:] for other in rows))
        for row in rows
    ]
    assert len(set(expected_support)) > 3  # the counts differ from triple to triple
    assert_exact(scores["support"], torch.tensor(expected_support, dtype=torch.float64))
    frame = audit_frame(scores, train, run.labels, order_by="loss", top_k=10)
    assert list(frame.columns) == ["rank", "head", "relation", "tail", "train_index", *DETECTORS]
    assert frame["loss"].is_monotonic_decreasing and len(frame) == 10
    assert float(frame["loss"].iloc[0]) == float(scores["loss"].max())


def test_shared_gradient_norms_give_the_same_cosine_influence(run, monkeypatch):
    """A cosine ``total_influence`` that reuses another TracIn's training norms equals one that computes its own;
    TracIns of other gradients refuse to share."""
    model = copy.deepcopy(run.model).double()
    train, valid = run.training_triples[:50], run.splits["validation"][:6]
    raw = TracIn(model, train, run.checkpoints, loss="bce", batch_size=16, progress=False)
    featurize, calls = raw._computer.featurize, []

    def dying(*args):  # killed after the first batches: an interrupted self-influence pass leaves no norms
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return featurize(*args)

    monkeypatch.setattr(raw._computer, "featurize", dying)
    with pytest.raises(KeyboardInterrupt):
        raw.self_influence()
    assert len(calls) == 3 and raw._train_norms == {}
    monkeypatch.undo()
    raw.self_influence()
    own = TracIn(model, train, run.checkpoints, loss="bce", normalize="cosine", progress=False)
    shared = TracIn(model, train, run.checkpoints, loss="bce", normalize="cosine", progress=False)
    shared.share_gradient_norms(raw)
    assert len(shared._train_norms) == len(run.checkpoints)
    assert_exact(shared.total_influence(valid), own.total_influence(valid))
    for other in (
        TracIn(model, train, run.checkpoints, loss="softmax", progress=False),
        TracIn(model, train[:40], run.checkpoints, loss="bce", progress=False),
        TracIn(model, train, run.checkpoints[:1], loss="bce", progress=False),
    ):
        with pytest.raises(KGTracinError, match="same gradients"):
            shared.share_gradient_norms(other)


def test_neighbour_and_far_rows(run):
    train, target = run.training_triples, run.splits["testing"][0]
    generator = torch.Generator().manual_seed(0)
    near, far = neighbour_rows(train, target, 10, generator), far_rows(train, target, 10, generator)
    entities = set(target[[0, 2]].tolist())
    assert all(entities & {h, t} for h, _, t in train[near].tolist())
    assert not any(entities & {h, t} for h, _, t in train[far].tolist())


@pytest.fixture(scope="module")
def retrainer(run):
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory(run.training_triples, run.labels.entity_to_id, run.labels.relation_to_id)
    return Retrainer(RetrainConfig(model="DistMult", embedding_dim=8, epochs=4, checkpoints=2), factory)


def test_isolated_retraining_deleting_nothing_is_bit_identical(retrainer):
    first, checkpoints = retrainer.isolated()
    second, _ = retrainer.isolated(torch.empty(0, dtype=torch.long))
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert len(checkpoints) == 2 and all(c.learning_rate == retrainer.config.learning_rate for c in checkpoints)


def _full_batch_adam(model, triples: torch.Tensor, size: int, steps: int, lr: float) -> list[dict]:
    """The isolated protocol written out: from the initial weights, ``steps`` Adam steps on the sum over
    ``triples`` of the 1-N cross-entropy in both directions, divided by ``size``. :return: the state after
    each step"""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    states = []
    for _ in range(steps):
        optimizer.zero_grad()
        tails = torch.nn.functional.cross_entropy(model.score_t(triples[:, :2]), triples[:, 2], reduction="sum")
        heads = torch.nn.functional.cross_entropy(model.score_h(triples[:, 1:]), triples[:, 0], reduction="sum")
        ((tails + heads) / size).backward()
        optimizer.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return states


@pytest.mark.parametrize("deleted", [[], [3, 17, 42], [0, 1, 2, 3, 4, 5, 6, 7]])
def test_isolated_retraining_is_full_batch_adam_over_the_kept_rows(retrainer, deleted):
    """Retraining without rows D is, step by step, full-batch Adam over exactly the other rows, with the loss
    divided by the size of the whole training set: written out here independently of the retrainer."""
    retrainer = copy.copy(retrainer)
    retrainer.model = copy.deepcopy(retrainer.model).double()
    retrainer.initial = {k: v.double() for k, v in retrainer.initial.items()}
    deleted = torch.tensor(deleted, dtype=torch.long)
    final, checkpoints = retrainer.isolated(deleted)
    keep = [i for i in range(retrainer.triples.shape[0]) if i not in set(deleted.tolist())]
    model = copy.deepcopy(retrainer.model)
    model.load_state_dict(retrainer.initial)
    config = retrainer.config
    states = _full_batch_adam(
        model.eval(), retrainer.triples[keep], retrainer.triples.shape[0], config.epochs, config.learning_rate
    )
    assert [c.learning_rate for c in checkpoints] == [config.learning_rate] * len(config.checkpoint_steps())
    for step, checkpoint in zip(config.checkpoint_steps(), checkpoints):
        for name, value in states[step - 1].items():
            assert_exact(checkpoint.state[name], value)
    for name, value in final.state_dict().items():
        assert_exact(value, states[-1][name])


def test_evaluate_end_to_end(run, tmp_path, capsys):
    from .test_cli import run_cli

    out = tmp_path / "eval"
    code, _stdout, err = run_cli(
        capsys,
        "evaluate",
        run.path,
        "--output",
        out,
        "--targets",
        2,
        "--steps",
        3,
        "--k",
        1,
        "--k",
        2,
        "--embedding-dim",
        8,
        "--noisy",
        0.05,
    )
    assert code == 0, err
    result = json.loads((out / "evaluation.json").read_text())
    table = result["deletion"]["table"]
    assert table, "the deletion table is empty"
    arms = {row["arm"] for row in table}
    assert {"NH-1", "NH-2", "RG-1", "RG-2", "TracIn softmax, train-normalised", "TracIn bce"} <= arms
    assert all(0 <= row["pd"] <= 100 and 0 <= row["tc"] <= 100 for row in result["deletion"]["table"])
    assert set(result["noisy"]["detectors"]) == {*DETECTORS, "loss (bce)"}
    assert (out / "evaluation.png").stat().st_size > 1000
    assert "| arm | k | PD % | TC % |" in (out / "evaluation.md").read_text()


@pytest.mark.parametrize("batches, epochs", [(1, 50), (80, 50), (81, 50), (235, 18), (4000, 1), (10**6, 1)])
def test_default_epochs_make_about_4000_steps(batches, epochs):
    """Unset, the epochs are ceil(4000 / batches per epoch), at most 50: a small graph trains 50 epochs, a real one
    a few thousand steps; given epochs are kept."""
    from kgtracin.training import TrainingConfig

    config = TrainingConfig(model="DistMult")
    assert config.epochs is None
    resolved = config.with_epochs(batches)
    assert resolved.epochs == epochs and resolved.checkpoints == min(5, epochs)
    assert TrainingConfig(model="DistMult", epochs=7).with_epochs(batches).epochs == 7


def test_checkpoint_schedules():
    from kgtracin.training import TrainingConfig

    assert TrainingConfig(model="DistMult", epochs=50).checkpoint_epochs() == [1, 3, 7, 19, 50]
    linear = TrainingConfig(model="DistMult", epochs=50, checkpoint_schedule="linear")
    assert linear.checkpoint_epochs() == [10, 20, 30, 40, 50]
    assert TrainingConfig(model="DistMult", epochs=2).checkpoints == 2
    with pytest.raises(ValueError, match="checkpoint-schedule"):
        TrainingConfig(model="DistMult", checkpoint_schedule="cubic")


def test_loss_registry_is_the_package():
    """Each loss is a module of ``kgtracin.losses`` named as the loss; the classes load lazily by name."""
    import pkgutil

    import kgtracin.losses as losses
    from kgtracin.losses.base import TripleLoss as Base

    modules = sorted(m.name for m in pkgutil.iter_modules(losses.__path__) if m.name != "base")
    assert list(losses.LOSS_NAMES) == modules == ["bce", "softmax"]
    assert losses.TripleLoss is Base
    assert losses.BCELoss.name == "bce" and losses.SoftmaxLoss.name == "softmax"
    assert isinstance(losses.make_loss("softmax"), losses.SoftmaxLoss)
    assert losses.make_loss(losses.BCELoss()).name == "bce"
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchLoss'"):
        losses.NoSuchLoss  # noqa: B018
    with pytest.raises(KGTracinError, match="unknown loss 'hinge'; choose one of bce, softmax"):
        losses.make_loss("hinge")


def test_train_normalisation_divides_by_the_training_gradient_norm(run):
    """``normalize="train"``: each checkpoint's ``lr <g, g'>`` divided by ``|g|`` of the training triple,
    computed here from the raw scores and self-influences of single checkpoints."""
    model = copy.deepcopy(run.model).double()
    train, valid = run.training_triples[:50], run.splits["validation"][:4]
    expected = 0
    for c in run.checkpoints:
        one = TracIn(model, train, [c], loss="softmax", progress=False)
        norms = (one.self_influence() / c.learning_rate).sqrt()
        expected = expected + one.scores(valid) / norms.unsqueeze(0)
    actual = TracIn(model, train, run.checkpoints, loss="softmax", normalize="train", progress=False)
    assert_exact(actual.scores(valid), expected)
    # self-influence: lr |g| per checkpoint with "train"; lr with "cosine"
    singles = [TracIn(model, train, [c], loss="softmax", progress=False) for c in run.checkpoints]
    expected_self = sum((s.self_influence() * c.learning_rate).sqrt() for s, c in zip(singles, run.checkpoints))
    assert_exact(actual.self_influence(), expected_self)
    cosine = TracIn(model, train, run.checkpoints, loss="softmax", normalize="cosine", progress=False)
    lrs = sum(c.learning_rate for c in run.checkpoints)
    assert_exact(cosine.self_influence(), torch.full((train.shape[0],), lrs, dtype=torch.float64))


def test_audit_frame_rows_are_the_triples_in_order(run):
    """Rows ordered by the chosen detector, highest first, ties to the smaller training index; each row's
    labels are its training triple's; without labels, the ids."""
    train = run.training_triples[:12]
    values = torch.tensor([3.0, 1.0, 3.0, 2.0, 0.0, 3.0, 1.0, 2.0, 5.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    scores = {"loss": values, "self_influence": -values}
    frame = audit_frame(scores, train, run.labels, order_by="loss", top_k=6)
    order = sorted(range(12), key=lambda i: (-float(values[i]), i))[:6]
    assert frame["train_index"].tolist() == order and frame["rank"].tolist() == list(range(1, 7))
    entities = {i: e for e, i in run.labels.entity_to_id.items()}
    relations = {i: r for r, i in run.labels.relation_to_id.items()}
    for row in frame.itertuples():
        h, r, t = train[row.train_index].tolist()
        assert (row.head, row.relation, row.tail) == (entities[h], relations[r], entities[t])
    plain = audit_frame(scores, train, None, order_by="self_influence", top_k=3)
    assert plain["train_index"].tolist() == sorted(range(12), key=lambda i: (float(values[i]), i))[:3]
    assert plain["head"].tolist() == [int(train[i, 0]) for i in plain["train_index"]]
    with pytest.raises(KGTracinError, match="cannot order by 'validation': it was not computed"):
        audit_frame(scores, train, run.labels, order_by="validation")


def test_retrainer_builds_the_configured_model(run):
    """The retrained architecture is the config's: its dimension, and DistMult without its constrainer and
    regulariser unless asked for; the same seed gives the same initial weights, another seed others."""
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory(run.training_triples, run.labels.entity_to_id, run.labels.relation_to_id)
    free = Retrainer(RetrainConfig(model="DistMult", embedding_dim=8, seed=3), factory)
    entity = free.model.entity_representations[0]
    relation = free.model.relation_representations[0]
    assert entity.shape == (8,) and entity.constrainer is None and entity.regularizer is None
    assert relation.regularizer is None
    constrained = Retrainer(RetrainConfig(model="DistMult", embedding_dim=8, constrained=True, seed=3), factory)
    assert constrained.model.entity_representations[0].constrainer is not None
    assert constrained.model.relation_representations[0].regularizer is not None
    same = Retrainer(RetrainConfig(model="DistMult", embedding_dim=8, seed=3), factory)
    other = Retrainer(RetrainConfig(model="DistMult", embedding_dim=8, seed=4), factory)
    assert all(torch.equal(free.initial[k], same.initial[k]) for k in free.initial)
    assert not all(torch.equal(free.initial[k], other.initial[k]) for k in free.initial)
    fresh = free._fresh()
    assert fresh is not free.model and all(
        a.data_ptr() != b.data_ptr() for a, b in zip(fresh.parameters(), free.model.parameters())
    )


def test_reshuffled_retraining_is_pykeens_loop_without_the_deleted_rows(retrainer):
    """PyKEEN's LCWA loop from a fresh initialisation of ``seed``: the same seed gives the same model, the
    checkpoints fall on the configured epochs with the optimiser's rate, and deleting rows changes the model."""
    config = retrainer.config
    first, checkpoints = retrainer.reshuffled(seed=5)
    again, _ = retrainer.reshuffled(seed=5)
    other, _ = retrainer.reshuffled(seed=6)
    deleted, _ = retrainer.reshuffled(torch.tensor([0, 1, 2, 3]), seed=5)
    state = first.state_dict()
    assert all(torch.equal(state[k], v) for k, v in again.state_dict().items())
    assert not all(torch.equal(state[k], v) for k, v in other.state_dict().items())
    assert not all(torch.equal(state[k], v) for k, v in deleted.state_dict().items())
    assert len(checkpoints) == len(config.checkpoint_steps())
    assert all(c.learning_rate == config.learning_rate for c in checkpoints)
    last = checkpoints[-1].state
    assert all(torch.equal(last[k], v) for k, v in state.items())  # the last checkpoint is the final model
    assert not first.training  # handed back in eval mode
