"""Matrix-product scoring for training: same class, same state dict, same scores and gradients as PyKEEN's."""

from __future__ import annotations

import copy

import pytest
import torch

from kgtracin.scorers import matrix_products, use_matrix_products


def _model(name: str, inverse: bool, **kwargs):
    from pykeen.datasets import Nations
    from pykeen.models import model_resolver

    factory = Nations(create_inverse_triples=inverse).training
    model = model_resolver.make(name, dict(embedding_dim=12, **kwargs), triples_factory=factory, random_seed=3)
    return model.double().eval(), factory  # eval: ConvE's dropout would differ between two forwards


#: every interaction with a form, and TransE's other norms
FORMS = [
    ("DistMult", {}),
    ("ComplEx", {}),
    ("ConvE", {}),
    ("TransE", {}),  # PyKEEN's default: the L1 norm
    ("TransE", {"scoring_fct_norm": 2}),
    ("TransE", {"scoring_fct_norm": 2, "power_norm": True}),
    ("RotatE", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), FORMS)
@pytest.mark.parametrize("inverse", [False, True])
def test_scores_and_gradients_match_pykeens_forward(name, kwargs, inverse):
    model, factory = _model(name, inverse, **kwargs)
    reference = copy.deepcopy(model)
    assert use_matrix_products(model) == ["interaction"]
    assert type(model) is type(reference) and type(model.interaction) is type(reference.interaction)
    assert model.state_dict().keys() == reference.state_dict().keys()
    for size in (5, 37):  # fewer and more queries than Nations' 14 entities
        _compare(model, reference, factory.mapped_triples[:size])


def _compare(model, reference, batch):
    for method, args in (("score_t", batch[:, :2]), ("score_h", batch[:, 1:]), ("score_hrt", batch)):
        ours, theirs = getattr(model, method)(args), getattr(reference, method)(args)
        assert ours.shape == theirs.shape
        assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12), method
        ours.square().sum().backward()
        theirs.square().sum().backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            assert torch.allclose(p.grad, q.grad, rtol=1e-12, atol=1e-12), (method, name)
            p.grad, q.grad = None, None


@pytest.mark.parametrize("name", ["DistMult", "ComplEx", "TransE", "RotatE"])
@pytest.mark.parametrize("batch", [5, 37])  # fewer and more queries than Nations' 14 entities
def test_no_broadcast_temporary_when_scoring_all_heads_or_tails(name, batch, monkeypatch):
    model, factory = _model(name, False)
    use_matrix_products(model)
    seen = []
    for operator in ("__mul__", "__add__", "__sub__", "__rsub__", "__neg__"):
        original = getattr(torch.Tensor, operator)

        def recording(*args, original=original):
            out = original(*args)
            seen.append(out.numel())
            return out

        monkeypatch.setattr(torch.Tensor, operator, recording)
    triples = factory.mapped_triples[:batch]
    model.score_t(triples[:, :2])
    model.score_h(triples[:, 1:])
    monkeypatch.undo()
    # the batch's own rows (as real pairs) or its (B, E) scores, never a (B, E, d) tensor
    assert seen and max(seen) <= max(batch * 12 * 2, batch * 14)


def test_the_context_restores_pykeens_forward():
    model, _factory = _model("DistMult", False)
    forward = model.interaction.forward
    with matrix_products(model) as changed:
        assert changed == ["interaction"] and model.interaction.forward != forward
    assert "forward" not in model.interaction.__dict__ and model.interaction.forward == forward


def test_models_without_a_matrix_product_form_are_left_alone():
    model, _ = _model("ERMLP", False)
    assert use_matrix_products(model) == []
    assert "forward" not in model.interaction.__dict__


def test_conve_in_training_mode_draws_the_same_dropout():
    model, factory = _model("ConvE", True)
    reference = copy.deepcopy(model)
    model.train(), reference.train()
    use_matrix_products(model)
    hr = factory.mapped_triples[:9, :2]
    torch.manual_seed(11)
    ours = model.score_t(hr)
    torch.manual_seed(11)
    theirs = reference.score_t(hr)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(ours, model.eval().score_t(hr))  # dropout was on
