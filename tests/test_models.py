"""The sweep: every ``ERModel`` in PyKEEN's ``model_resolver`` is exact with every method, or refused in one line.

Each model is built on Nations with small dimensions, with and without inverse triples, in float64, with two
checkpoints at different learning rates. Before kgtracin sees it, the model scores a batch under ``no_grad`` as
PyKEEN's evaluator does, which fills the caches of message-passing models. The reference is independent of
kgtracin: for every triple a freshly built model, one ``torch.autograd.grad`` of the loss over all trainable
parameters, and the TracIn sum of dot products. ``total_influence`` (along one summed test gradient, except for
``loop``) is checked against that matrix's column sums.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from kgtracin import Checkpoint, KGTracinError, TracIn

from .conftest import assert_exact

LEARNING_RATES = (0.3, 0.05)
METHODS = ("loop", "vmap", "fast")
#: small dimensions for models whose defaults do not fit d=8
MODEL_KWARGS = {
    "ConvE": dict(embedding_dim=16, output_channels=2),
    "TuckER": dict(embedding_dim=8, relation_dim=4),
    "NTN": dict(embedding_dim=4, num_slices=2),
    "ConvKB": dict(embedding_dim=8, num_filters=2),
    "TransR": dict(embedding_dim=8, relation_dim=4),
    "TransD": dict(embedding_dim=8, relation_dim=4),
    "ERMLPE": dict(embedding_dim=8, hidden_dim=8),
    "RGCN": dict(embedding_dim=8, num_layers=1),
}
#: The configurations PyKEEN 1.11 itself refuses to build on Nations, pinned exactly: (model, inverse triples)
#: -> (exception type, words of its message). Any other build failure fails the sweep instead of skipping.
EXPECTED_SKIPS = {
    ("CompGCN", False): (AssertionError, ""),  # CompGCN needs inverse triples
    ("DistMultLiteralGated", False): (TypeError, "entity_embedding_dim"),  # GatedCombination rejects its kwargs
    ("DistMultLiteralGated", True): (TypeError, "entity_embedding_dim"),
    ("InductiveNodePiece", False): (ValueError, "does not create inverse triples"),
    ("InductiveNodePieceGNN", False): (ValueError, "does not create inverse triples"),
    ("NodePiece", False): (ValueError, "does not create inverse triples"),
    ("RGCN", True): (ValueError, "internally creates inverse triples"),
}
#: (model, method) -> what the one-line refusal must say; every other combination must be exact
REFUSED = {
    **{("RGCN", m): "method='loop'" for m in ("vmap", "fast")},  # torch.func cannot batch sparse message passing
    **{(f"InductiveNodePiece{g}", m): "inductive model" for g in ("", "GNN") for m in METHODS},
}


def _er_models() -> list[str]:
    from pykeen.models import ERModel, model_resolver

    return sorted({cls.__name__ for cls in model_resolver.lookup_dict.values() if issubclass(cls, ERModel)})


def _factory(name: str, inverse: bool):
    from pykeen.triples import TriplesNumericLiteralsFactory

    factory = _nations(inverse)
    if "Literal" in name:  # literal models need numeric attributes per entity: three random ones
        factory = TriplesNumericLiteralsFactory(
            mapped_triples=factory.mapped_triples,
            entity_to_id=factory.entity_to_id,
            relation_to_id=factory.relation_to_id,
            create_inverse_triples=inverse,
            numeric_literals=np.random.RandomState(0).rand(factory.num_entities, 3).astype("float32"),
            literals_to_id={f"literal{i}": i for i in range(3)},
        )
    return factory


_DATASETS: dict = {}


def _nations(inverse: bool):
    from pykeen.datasets import Nations

    if inverse not in _DATASETS:
        _DATASETS[inverse] = Nations(create_inverse_triples=inverse)
    return _DATASETS[inverse].training


def _builder(name: str, inverse: bool):
    from pykeen.models import model_resolver

    factory = _factory(name, inverse)
    kwargs = dict(MODEL_KWARGS.get(name, dict(embedding_dim=8)))
    if name.startswith("Inductive"):
        kwargs["inference_factory"] = factory
    return lambda: model_resolver.make(name, kwargs, triples_factory=factory, random_seed=1)


def _build_or_skip(name: str, inverse: bool):
    """The model, or a skip for exactly the pinned configurations (with their pinned error)."""
    expected = EXPECTED_SKIPS.get((name, inverse))
    if expected is None:
        return _builder(name, inverse)()
    kind, words = expected
    with pytest.raises(kind, match=words):
        _builder(name, inverse)()
    pytest.skip(f"PyKEEN cannot build {name} with inverse_triples={inverse} on Nations ({kind.__name__})")


def _cast_edge_weights(module, args, kwargs):
    """The reference's own fix for PyKEEN's float32 R-GCN edge weights."""
    if kwargs.get("edge_weights") is not None:
        kwargs["edge_weights"] = kwargs["edge_weights"].double()
    return args, kwargs


def _reference_loss(model, hrt: torch.Tensor, loss: str) -> torch.Tensor:
    """One triple's loss, from the model's own scoring functions. ``hrt``: shape (3,), dataset ids."""
    h, r, t = (int(x) for x in hrt)
    internal = 2 * r if model.use_inverse_triples else r
    if loss == "bce":
        return F.softplus(-model.score_hrt(torch.tensor([[h, internal, t]]))).sum()
    tail = model.score_t(torch.tensor([[h, internal]]))
    head = (
        model.score_t(torch.tensor([[t, internal + 1]]))
        if model.use_inverse_triples
        else model.score_h(torch.tensor([[r, t]]))
    )
    return F.cross_entropy(tail, torch.tensor([t])) + F.cross_entropy(head, torch.tensor([h]))


def _reference_gradients(build, state, triples: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-triple gradients over all trainable parameters, each from a freshly built model. Shape (n, P)."""
    rows = []
    for hrt in triples:
        model = build()
        model.load_state_dict(state)
        model = model.double().eval()
        for module in model.modules():
            if type(module).__name__ == "RGCNRepresentation":
                for layer in module.layers:
                    layer.register_forward_pre_hook(_cast_edge_weights, with_kwargs=True)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(_reference_loss(model, hrt, loss), params, allow_unused=True)
        rows.append(
            torch.cat(
                [torch.zeros(p.numel(), dtype=p.dtype) if g is None else g.reshape(-1) for g, p in zip(grads, params)]
            )
        )
    return torch.stack(rows)


CASES = [(name, inverse) for name in _er_models() for inverse in (False, True)]


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{'inverse' if i else 'plain'}" for n, i in CASES])
def case(request):
    name, inverse = request.param
    model = _build_or_skip(name, inverse)
    build = _builder(name, inverse)
    states = []
    for seed in range(len(LEARNING_RATES)):  # two checkpoints: the initial weights, perturbed
        replica, generator = build(), torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in replica.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
        states.append({k: v.detach().clone().double() for k, v in replica.state_dict().items()})
    model.load_state_dict(states[-1])
    model.eval()
    factory = _nations(inverse)
    with torch.no_grad():  # as PyKEEN's evaluator does: fills the caches of message-passing models
        try:
            model.score_t(factory.mapped_triples[:4, :2])
        except ValueError:  # inductive models refuse the transductive setting
            pass
    if name == "RGCN":
        assert model.entity_representations[0].enriched_embeddings is not None  # the cache the sweep must defeat
    model = model.double()
    return name, build, model, states


@pytest.mark.parametrize("loss", ["bce", "softmax"])
def test_exact_or_refused(case, loss):
    name, build, model, states = case
    factory = _nations(model.use_inverse_triples)
    train, test = factory.mapped_triples[:12], factory.mapped_triples[-3:]
    checkpoints = [Checkpoint(s, lr) for s, lr in zip(states, LEARNING_RATES)]
    expected = expected_self = None
    if not name.startswith("Inductive"):
        expected, expected_self = 0, 0
        for state, lr in zip(states, LEARNING_RATES):
            g_train = _reference_gradients(build, state, train, loss)
            g_test = _reference_gradients(build, state, test, loss)
            expected = expected + lr * g_test @ g_train.T
            expected_self = expected_self + lr * (g_train * g_train).sum(dim=1)
        assert expected.abs().max() > 0
    for method in METHODS:
        refusal = REFUSED.get((name, method))
        try:
            tracin = TracIn(model, train, checkpoints, method=method, batch_size=5, progress=False, loss=loss)
            actual, actual_self = tracin.scores(test), tracin.self_influence()
            actual_total = tracin.total_influence(test)  # loop: the kernels' sums; else one summed gradient
        except KGTracinError as error:
            message = str(error)
            assert refusal is not None, f"{name} {method} refused: {message}"
            assert refusal in message and "\n" not in message
            assert name in message or "inductive" in message
            continue
        assert refusal is None, f"{name} {method} should have been refused"
        assert_exact(actual, expected)
        assert_exact(actual_self, expected_self)
        assert_exact(actual_total, expected.sum(dim=0))


def test_every_model_is_swept():
    """The sweep covers every concrete ``ERModel`` that PyKEEN exports (found here from ``pykeen.models``, not from
    the resolver the sweep uses), and the pinned skips are configurations of swept models."""
    import inspect

    import pykeen.models

    exported = {
        name
        for name in pykeen.models.__all__
        if inspect.isclass(cls := getattr(pykeen.models, name))
        and issubclass(cls, pykeen.models.ERModel)
        and name not in ("ERModel", "InductiveERModel", "LiteralModel")  # generic bases: built from an interaction
    }
    swept = set(_er_models())
    assert exported <= swept, sorted(exported - swept)
    assert {name for name, _ in EXPECTED_SKIPS} <= swept
    assert len(swept) == 38  # PyKEEN 1.11.1; README states the same count


def test_unique_lookups_are_exact():
    """``Embedding(unique=True)`` gathers sorted distinct rows; the fast path must not take them as batch rows."""
    from pykeen.models import ERModel

    factory = _nations(False)

    def build():
        return ERModel(
            triples_factory=factory,
            interaction="distmult",
            random_seed=1,
            entity_representations_kwargs=dict(shape=8, unique=True),
            relation_representations_kwargs=dict(shape=8),
        )

    model = build().double()
    train = factory.mapped_triples[:12]
    assert len(set(train[:5, 0].tolist()) | set(train[:5, 2].tolist())) > 1  # distinct heads and tails
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    g_train = _reference_gradients(build, state, train, "bce")
    expected = g_train[:3] @ g_train.T
    for method in METHODS:
        actual = TracIn(model, train, method=method, batch_size=5, progress=False).scores(train[:3])
        assert_exact(actual, expected)
