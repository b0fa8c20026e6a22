"""The Python API: parameter selection, invariants of the results, checkpoints and loading runs."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from kgtracin import Checkpoint, KGTracinError, TracIn
from kgtracin.gradients import row_kernel
from kgtracin.runs import load_run

from .conftest import assert_exact


@pytest.fixture(scope="module")
def run(nations_run):
    return load_run(nations_run)


@pytest.fixture(scope="module")
def small(run):
    """float64 ConvE, its 2 checkpoints, 200 training and 8 test triples."""
    return copy.deepcopy(run.model).double(), run.checkpoints, run.training_triples[:200], run.splits["testing"][:8]


@pytest.mark.parametrize(
    "patterns",
    [
        ["interaction.hr1d.*"],
        ["interaction.*"],
        ["*_embeddings.weight"],
        ["relation_representations.0._embeddings.weight", "interaction.hr2d.2.*"],
    ],
)
def test_parameter_glob_matches_loop(small, patterns):
    model, checkpoints, train, test = small
    fast = TracIn(model, train, checkpoints, parameters=patterns, progress=False)
    loop = TracIn(model, train, checkpoints, parameters=patterns, method="loop", progress=False)
    names = fast.parameter_names
    assert names and set(names) == set(fast.describe())
    assert_exact(fast.scores(test), loop.scores(test))


def test_glob_selects_exactly_the_matching_names(small):
    model, checkpoints, train, _ = small
    names = TracIn(model, train, checkpoints, parameters=["interaction.hr1d.*"], progress=False).parameter_names
    assert names == [
        "interaction.hr1d.0.weight",
        "interaction.hr1d.0.bias",
        "interaction.hr1d.2.weight",
        "interaction.hr1d.2.bias",
    ]


def test_all_parameters_are_the_sum_of_a_subset_and_its_complement(small):
    """The inner product splits over parameters: TracIn over all of them is TracIn over any subset plus TracIn
    over the rest (and neither part is zero)."""
    model, checkpoints, train, test = small
    full = TracIn(model, train, checkpoints, progress=False).scores(test)
    part = TracIn(model, train, checkpoints, parameters="interaction.*", progress=False)
    rest = [name for name, p in model.named_parameters() if p.requires_grad and name not in part.parameter_names]
    rest_scores = TracIn(model, train, checkpoints, parameters=rest, progress=False).scores(test)
    part_scores = part.scores(test)
    assert part_scores.abs().max() > 0 and rest_scores.abs().max() > 0
    assert_exact(part_scores + rest_scores, full)


def test_pattern_matching_nothing_is_an_error(small):
    model, checkpoints, train, _ = small
    with pytest.raises(KGTracinError, match="matches no trainable parameter"):
        TracIn(model, train, checkpoints, parameters=["interaction.nothing*"])


def test_self_influence_is_the_diagonal(small):
    model, checkpoints, train, _ = small
    tracin = TracIn(model, train[:40], checkpoints, batch_size=16, progress=False)
    assert_exact(tracin.self_influence(), torch.diagonal(tracin.scores(train[:40])))


@pytest.mark.parametrize("k", [1, 5, 300])
def test_influence_top_k_is_top_k_of_the_matrix(small, k):
    model, checkpoints, train, test = small
    tracin = TracIn(model, train, checkpoints, batch_size=23, progress=False)  # many batches to merge
    full = tracin.scores(test)
    result = tracin.influence(test, top_k=k)
    kk = min(k, train.shape[0])
    top = torch.topk(full, kk, dim=1)
    bottom = torch.topk(full, kk, dim=1, largest=False)
    assert result.proponents.scores.shape == (test.shape[0], kk)
    assert torch.allclose(result.proponents.scores, top.values)
    assert torch.allclose(result.opponents.scores, bottom.values)
    assert torch.equal(result.proponents.indices, top.indices)
    assert torch.equal(result.opponents.indices, bottom.indices)
    # rows run most positive first / most negative first
    assert (result.proponents.scores[:, :-1] >= result.proponents.scores[:, 1:]).all()
    assert (result.opponents.scores[:, :-1] <= result.opponents.scores[:, 1:]).all()


def test_top_k_sums_checkpoints_before_selecting(small):
    model, checkpoints, train, test = small
    single = [TracIn(model, train, [Checkpoint(c.state, 1.0)], progress=False).scores(test) for c in checkpoints]
    total = TracIn(model, train, checkpoints, progress=False)
    lrs = [c.learning_rate for c in checkpoints]
    assert_exact(total.scores(test), sum(lr * s for lr, s in zip(lrs, single)))
    result = total.influence(test, top_k=3)
    expected = torch.topk(sum(lr * s for lr, s in zip(lrs, single)), 3, dim=1)
    assert torch.equal(result.proponents.indices, expected.indices)


@pytest.mark.parametrize(
    "strategy, tiles", [("tiles", (3,)), ("tiles", (5,)), ("tiles", (2, 7, 64)), ("buckets", (3,))]
)
def test_batch_size_and_row_kernel_strategy_do_not_change_scores(small, monkeypatch, strategy, tiles):
    model, checkpoints, train, test = small
    expected = TracIn(model, train, checkpoints, method="loop", progress=False).scores(test)
    monkeypatch.setattr(row_kernel, "ROW_TILES", tiles)  # many tiles, most of them partial
    # force one strategy of the row kernel
    monkeypatch.setattr(row_kernel, "COST_PER_BUCKET" if strategy == "tiles" else "COST_PER_TILE", 1e9)
    for batch_size in (7, 1024):
        actual = TracIn(model, train, checkpoints, batch_size=batch_size, progress=False).scores(test)
        assert_exact(actual, expected)


def test_learning_rate_scales_scores(small):
    model, checkpoints, train, test = small
    one = TracIn(model, train, [Checkpoint(checkpoints[0].state, 1.0)], progress=False).scores(test)
    half = TracIn(model, train, [Checkpoint(checkpoints[0].state, 0.5)], progress=False).scores(test)
    assert_exact(half, 0.5 * one)


def test_default_checkpoint_is_current_weights(small):
    model, _, train, test = small
    default = TracIn(model, train, progress=False).scores(test)
    explicit = TracIn(model, train, [Checkpoint(model.state_dict(), 1.0)], progress=False).scores(test)
    assert torch.equal(default, explicit)


def test_triples_factory_is_accepted_and_gives_labels(run):
    from pykeen.triples import TriplesFactory

    factory = TriplesFactory(
        run.training_triples, run.labels.entity_to_id, run.labels.relation_to_id, create_inverse_triples=True
    )
    tracin = TracIn(run.model, factory, run.checkpoints, progress=False)
    test = run.splits["testing"][:2]
    frame = tracin.influence(test, top_k=2).to_frame()
    assert len(frame) == 2 * 2 * 2
    id_to_entity = {i: e for e, i in factory.entity_to_id.items()}  # the factory's own map, inverted here
    id_to_relation = {i: r for r, i in factory.relation_to_id.items()}
    for row in frame.itertuples():
        h, r, t = run.training_triples[row.train_index].tolist()
        assert (row.train_head, row.train_relation, row.train_tail) == (
            id_to_entity[h],
            id_to_relation[r],
            id_to_entity[t],
        )


def test_to_frame_labels_and_order(run):
    tracin = TracIn.from_run(_run_path(run), progress=False)
    result = tracin.influence(run.splits["testing"][:3], top_k=4)
    frame = result.to_frame()
    assert len(frame) == 3 * 2 * 4
    assert list(frame.columns[:6]) == ["test_index", "test_head", "test_relation", "test_tail", "kind", "rank"]
    first = frame[frame["test_index"] == 0]
    assert list(first["kind"]) == ["proponent"] * 4 + ["opponent"] * 4
    assert list(first["rank"]) == [1, 2, 3, 4] * 2
    h, r, t = run.labels.to_labels(run.splits["testing"][:1])[0]
    assert (first["test_head"] == h).all() and (first["test_relation"] == r).all() and (first["test_tail"] == t).all()
    train_labels = run.labels.to_labels(run.training_triples[result.proponents.indices[0]])
    assert list(first["train_head"][:4]) == list(train_labels[:, 0])


def _run_path(run):
    return run.checkpoints[0].state.rsplit("/checkpoints/", 1)[0]


def test_from_run_uses_manifest_learning_rates(run):
    tracin = TracIn.from_run(_run_path(run), progress=False)
    manifest_lrs = [c["learning_rate"] for c in run.manifest["checkpoints"]]
    assert [c.learning_rate for c in tracin.checkpoints] == manifest_lrs
    assert len(manifest_lrs) == 2


def test_from_pykeen_folder(run, tmp_path, caplog):
    from pykeen.triples import TriplesFactory

    model = run.model
    torch.save(model, tmp_path / "trained_model.pkl")
    factory = TriplesFactory(
        run.training_triples, run.labels.entity_to_id, run.labels.relation_to_id, create_inverse_triples=True
    )
    factory.to_path_binary(tmp_path / "training_triples")
    with pytest.raises(KGTracinError, match="pickled model"):  # safe by default
        TracIn.from_run(tmp_path, progress=False)
    with caplog.at_level(logging.WARNING):
        tracin = TracIn.from_run(tmp_path, trust_pickle=True, progress=False)
    assert "learning rate" in caplog.text
    test = run.splits["testing"][:2]
    assert tracin.config.loss == "softmax"  # the pickled model carries its CrossEntropyLoss
    expected = TracIn(model, run.training_triples, progress=False, loss="softmax").scores(test)
    assert torch.allclose(tracin.scores(test), expected)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.tensor([[0, 0]]), "shape"),
        (torch.tensor([[0, 0, 999]]), "tail id 999"),
        (torch.tensor([[0, 55, 1]]), "relation id 55"),  # 55 dataset relations; 110 internal ones
        (torch.tensor([[-1, 0, 1]]), "head id -1"),
        (torch.zeros(0, 3, dtype=torch.long), "empty"),
        (torch.zeros(2, 3), "LongTensor"),
    ],
)
def test_bad_test_triples(small, bad, match):
    model, checkpoints, train, _ = small
    with pytest.raises(KGTracinError, match=match):
        TracIn(model, train, checkpoints, progress=False).scores(bad)


def test_bad_options(small):
    model, _checkpoints, train, test = small
    with pytest.raises(KGTracinError, match="unknown method"):
        TracIn(model, train, method="fastest")
    with pytest.raises(KGTracinError, match="batch size"):
        TracIn(model, train, batch_size=0)
    with pytest.raises(KGTracinError, match="top_k"):
        TracIn(model, train, progress=False).influence(test, top_k=0)
    with pytest.raises(KGTracinError, match="learning rate"):
        Checkpoint(model.state_dict(), 0.0)
    with pytest.raises(KGTracinError, match="ERModel"):
        TracIn(torch.nn.Linear(2, 2), train)


def test_checkpoint_files_load_safely(small, tmp_path):
    """A file holding pickled objects is refused unless trusted; a state dict never needs trust."""
    model, _, train, test = small
    pickled = tmp_path / "model.pkl"
    torch.save(model, pickled)
    with pytest.raises(KGTracinError, match="pickled Python objects"):
        TracIn(model, train, [Checkpoint(pickled, 1.0)], progress=False).scores(test)
    trusted = TracIn(model, train, [Checkpoint(pickled, 1.0, trust_pickle=True)], progress=False).scores(test)
    plain = tmp_path / "state.pt"
    torch.save(model.state_dict(), plain)
    assert torch.equal(TracIn(model, train, [Checkpoint(plain, 1.0)], progress=False).scores(test), trusted)


def test_bad_checkpoint_files(small, tmp_path):
    model, _, train, test = small
    with pytest.raises(KGTracinError, match="does not exist"):
        TracIn(model, train, [Checkpoint(tmp_path / "missing.pt", 1.0)], progress=False).scores(test)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(KGTracinError, match="corrupt"):
        TracIn(model, train, [Checkpoint(corrupt, 1.0)], progress=False).scores(test)
    wrong = tmp_path / "wrong.pt"
    torch.save({"some.weight": torch.zeros(3)}, wrong)
    with pytest.raises(KGTracinError, match="does not match"):
        TracIn(model, train, [Checkpoint(wrong, 1.0)], progress=False).scores(test)
