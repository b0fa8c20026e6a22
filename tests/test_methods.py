"""Generic cases: every method x model x loss agrees with the ``loop`` reference on all parameters.

Each model gets a three-line subclass of :class:`GenericModelCase`; a meta-test fails when a model in
:data:`MODELS` has no case.
"""

from __future__ import annotations

import pytest
import torch

from kgtracin import Checkpoint, TracIn
from kgtracin.runs import load_run

from .conftest import assert_exact

#: every model kgtracin promises a fast path for, plus generic ERModels
MODELS = ("ConvE", "DistMult", "TransE", "ComplEx", "RotatE", "ERMLP", "TuckER")
#: (model, inverse triples) whose softmax loss has the closed form (scores linear in the candidate entity)
SOFTMAX_CLOSED_FORM = {("ConvE", True), ("DistMult", False), ("DistMult", True), ("ComplEx", False)}
NUM_TRAIN, NUM_TEST = 120, 6


class GenericModelCase:
    """Checks every model must pass. Subclasses set ``model`` and ``inverse``."""

    model: str
    inverse: bool

    @pytest.fixture(scope="class", params=["bce", "softmax"])
    def setup(self, run_factory, request):
        loss = request.param
        run = load_run(run_factory(self.model, self.inverse))
        model = run.model.double()  # compare in float64
        assert run.model.use_inverse_triples == self.inverse
        # two checkpoints with different learning rates
        checkpoints = [Checkpoint(c.state, lr) for c, lr in zip(run.checkpoints, (0.3, 0.05))]
        assert len(checkpoints) == 2
        train = run.training_triples[:NUM_TRAIN]
        test = run.splits["testing"][:NUM_TEST]
        reference = TracIn(model, train, checkpoints, method="loop", progress=False, loss=loss)
        return model, checkpoints, train, test, reference.scores(test), reference.self_influence(), loss

    @pytest.mark.parametrize("method", ["vmap", "fast"])
    def test_scores_match_loop(self, setup, method):
        model, checkpoints, train, test, expected, _, loss = setup
        actual = TracIn(model, train, checkpoints, method=method, batch_size=32, progress=False, loss=loss).scores(test)
        assert actual.shape == (NUM_TEST, NUM_TRAIN)
        assert actual.dtype == torch.float64
        assert_exact(actual, expected)

    @pytest.mark.parametrize("method", ["vmap", "fast"])
    def test_self_influence_matches_loop(self, setup, method):
        model, checkpoints, train, _, _, expected, loss = setup
        actual = TracIn(
            model, train, checkpoints, method=method, batch_size=32, progress=False, loss=loss
        ).self_influence()
        assert_exact(actual, expected)

    @pytest.mark.parametrize("method", ["vmap", "fast"])
    @pytest.mark.parametrize("normalize", [None, "cosine"])
    def test_pair_scores_match_the_dense_scores(self, setup, method, normalize, monkeypatch):
        """``Scorer.run_pairs`` (the neighbourhood's path) gives the dense matrix's entries at the pairs, in
        chunks that split batches."""
        from kgtracin import scoring

        model, checkpoints, train, test, expected, _, loss = setup
        options = {"method": method, "batch_size": 32, "progress": False, "loss": loss, "normalize": normalize}
        tracin = TracIn(model, train, checkpoints, **options)
        if normalize is not None:
            expected = tracin.scores(test)  # equal to scaled loop scores: test_normalized_is_scaled_raw
        generator = torch.Generator().manual_seed(0)
        pairs = torch.randperm(NUM_TRAIN * NUM_TEST, generator=generator)[:300].sort().values  # distinct pairs
        i, j = pairs // NUM_TEST, pairs % NUM_TEST
        monkeypatch.setattr(scoring, "_PAIR_CHUNK", 7)
        actual = tracin._scorer().run_pairs(train, test, i, j)
        assert_exact(actual, expected[j, i])

    @pytest.mark.parametrize(
        ("normalize", "reverse_only"), [(None, False), ("train", False), ("cosine", False), (None, True)]
    )
    def test_summed_influence_matches_the_column_sums(self, setup, normalize, reverse_only, monkeypatch):
        """``total_influence`` along one summed test gradient (``Scorer.run_summed``, forward mode or reverse
        mode twice) equals the column sums of the loop reference's matrix, normalised as that matrix is."""
        from kgtracin.gradients import directional

        model, checkpoints, train, test, expected, _, loss = setup
        if normalize is not None:
            expected = TracIn(
                model, train, checkpoints, method="loop", normalize=normalize, progress=False, loss=loss
            ).scores(test)
        if reverse_only:
            monkeypatch.setattr(directional, "_forward_mode", lambda *args: None)  # reverse mode twice
            monkeypatch.setattr(directional, "_FALLBACK", {})  # the record of failures is restored after the test
        options = {"method": "fast", "batch_size": 32, "progress": False, "loss": loss, "normalize": normalize}
        actual = TracIn(model, train, checkpoints, **options).total_influence(test)
        assert actual.dtype == torch.float64
        assert_exact(actual, expected.sum(dim=0))

    def test_reference_is_not_trivial(self, setup):
        *_, expected, self_expected, _ = setup
        assert expected.abs().max() > 0 and expected.std() > 0
        assert (self_expected > 0).all()

    def test_fast_covers_all_parameters(self, setup):
        model, checkpoints, train, *_, loss = setup
        tracin = TracIn(model, train, checkpoints, progress=False, loss=loss)
        paths = tracin.describe()
        assert set(paths) == {name for name, p in model.named_parameters() if p.requires_grad}
        embeddings = [n for n in paths if n.endswith("_embeddings.weight")]
        if loss == "bce":
            assert embeddings and all(paths[n] == "rows" for n in embeddings)
        elif (self.model, self.inverse) in SOFTMAX_CLOSED_FORM:
            assert {paths[n] for n in embeddings} == {"rows", "rows+candidates"}
        else:  # the exact fallback says why
            assert all(p.startswith("vmap (softmax: ") for p in paths.values())

    def test_normalized_is_scaled_raw(self, setup):
        """``normalize="train"`` divides each training gradient by its norm, checkpoint by checkpoint."""
        model, checkpoints, train, test, *_, loss = setup
        per_checkpoint = []
        for checkpoint in checkpoints:
            tracin = TracIn(model, train, [checkpoint], progress=False, loss=loss)
            norms = (tracin.self_influence() / checkpoint.learning_rate).sqrt()
            per_checkpoint.append(tracin.scores(test) / norms)
        expected = sum(per_checkpoint)
        normalized = TracIn(model, train, checkpoints, progress=False, loss=loss, normalize="train")
        assert_exact(normalized.scores(test), expected)
        expected_self = sum(
            torch.sqrt(c.learning_rate * TracIn(model, train, [c], progress=False, loss=loss).self_influence())
            for c in checkpoints
        )
        assert_exact(normalized.self_influence(), expected_self)


class TestConvE(GenericModelCase):
    model, inverse = "ConvE", True


class TestConvENoInverse(GenericModelCase):
    model, inverse = "ConvE", False


class TestDistMult(GenericModelCase):
    model, inverse = "DistMult", False


class TestDistMultInverse(GenericModelCase):
    model, inverse = "DistMult", True


class TestTransE(GenericModelCase):
    model, inverse = "TransE", False


class TestComplEx(GenericModelCase):
    model, inverse = "ComplEx", False


class TestRotatE(GenericModelCase):
    model, inverse = "RotatE", True


class TestERMLP(GenericModelCase):
    model, inverse = "ERMLP", False


class TestTuckER(GenericModelCase):
    model, inverse = "TuckER", False


def test_every_model_has_a_case():
    covered = {cls.model for cls in GenericModelCase.__subclasses__()}
    assert covered == set(MODELS)


def test_conve_uses_every_structured_path(run_factory):
    run = load_run(run_factory("ConvE", True))
    paths = set(TracIn(run.model, run.training_triples, progress=False).describe().values())
    assert paths == {"rows", "outer-product", "conv2d-unfold", "batchnorm-eval"}


def test_softmax_is_cross_entropy_in_both_directions(run_factory):
    """The softmax loss against PyKEEN's own scoring of all tails and (inverse) heads."""
    from torch.nn import functional as F

    from kgtracin.adapters import ModelAdapter

    for model_name, inverse in (("ConvE", True), ("DistMult", False)):
        run = load_run(run_factory(model_name, inverse))
        model, test = run.model.double(), run.splits["testing"][:4]
        tails = model.predict_t(test[:, :2]) if not model.predict_with_sigmoid else None
        heads = model.predict_h(test[:, 1:])
        expected = F.cross_entropy(tails, test[:, 2], reduction="none") + F.cross_entropy(
            heads, test[:, 0], reduction="none"
        )
        actual = ModelAdapter(model, loss="softmax").losses(test)
        assert_exact(actual, expected)


def test_tucker_core_tensor_falls_back_to_vmap(run_factory):
    run = load_run(run_factory("TuckER", False))
    assert TracIn(run.model, run.training_triples, progress=False).describe()["interaction.core_tensor"] == "vmap"


def test_log_names_the_path_of_each_parameter_group(run_factory, caplog):
    import logging

    run = load_run(run_factory("TuckER", False))
    with caplog.at_level(logging.INFO, logger="kgtracin"):
        TracIn(run.model, run.training_triples[:10], progress=False).self_influence()
    assert "fast path for TuckER" in caplog.text
    assert "by rows" in caplog.text and "by batchnorm-eval" in caplog.text and "1 parameter(s) by vmap" in caplog.text


def test_softmax_closed_form_checks_linearity_on_every_batch(run_factory, monkeypatch):
    """The closed form rests on scores linear in the candidate; a model that is not (TransE), let past the static
    list, is caught by the check on the model's own score of the true triple, in one line."""
    from kgtracin import KGTracinError
    from kgtracin.losses import softmax

    run = load_run(run_factory("TransE", False))
    monkeypatch.setattr(softmax, "softmax_unsupported", lambda model: None)
    tracin = TracIn(run.model, run.training_triples[:20], progress=False, loss="softmax")
    assert "rows+candidates" in tracin.describe().values()
    with pytest.raises(KGTracinError, match="scores are not linear in the candidate entity"):
        tracin.scores(run.splits["testing"][:2])


@pytest.mark.parametrize(("model_name", "inverse"), sorted(SOFTMAX_CLOSED_FORM))
def test_softmax_shares_the_scores_of_repeated_queries_exactly(run_factory, model_name, inverse, monkeypatch):
    """Triples of one batch that share a query (``(h, r)``, or ``(r, t)`` for heads) are scored once per query
    (:func:`kgtracin.losses.softmax.distinct_queries`); the influences stay the loop reference's, in a shuffled
    batch where every triple shares its tail query or its head query with another, and in one where none does."""
    from kgtracin.losses import softmax

    run = load_run(run_factory(model_name, inverse))
    model = run.model.double()
    checkpoints = [Checkpoint(c.state, lr) for c, lr in zip(run.checkpoints, (0.3, 0.05))]
    base = run.training_triples[:12]
    entities = model.num_entities
    other_tail, other_head = base.clone(), base.clone()
    other_tail[:, 2] = (base[:, 2] + 1) % entities  # the same (h, r), another tail
    other_head[:, 0] = (base[:, 0] + 1) % entities  # the same (r, t), another head
    repeated = torch.cat([base, other_tail, other_head])
    repeated = repeated[torch.randperm(repeated.shape[0], generator=torch.Generator().manual_seed(0))]
    distinct = torch.stack([torch.arange(6) % entities, torch.arange(6) % 3, (torch.arange(6) * 5 + 1) % entities], 1)
    test = run.splits["testing"][:4]
    found = []  # (batch size, distinct queries) of every call inside the fast path
    original = softmax.distinct_queries

    def spy(query):
        first, inverse = original(query)
        found.append((query.shape[0], query.shape[0] if first is None else first.shape[0]))
        return first, inverse

    monkeypatch.setattr(softmax, "distinct_queries", spy)
    for train, shared in ((repeated, True), (distinct, False)):
        options = {"progress": False, "loss": "softmax", "batch_size": train.shape[0]}
        reference = TracIn(model, train, checkpoints, method="loop", **options)
        fast = TracIn(model, train, checkpoints, method="fast", **options)
        found.clear()
        assert_exact(fast.scores(test), reference.scores(test))
        assert_exact(fast.self_influence(), reference.self_influence())
        training_calls = [(b, u) for b, u in found if b == train.shape[0]]  # both directions, every checkpoint
        assert len(training_calls) >= 2
        if shared:  # fewer distinct queries than triples in every direction: the shared path ran
            assert all(u < b for b, u in training_calls)
        else:
            assert all(u == b for b, u in training_calls)
