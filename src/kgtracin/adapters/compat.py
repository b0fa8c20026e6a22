"""What PyKEEN models need before kgtracin differentiates them.

* **Caches.** Message-passing representations keep the enriched entity table between calls: R-GCN's
  ``RGCNRepresentation.enriched_embeddings`` and CompGCN's ``CombinedCompGCNRepresentations
  .enriched_representations``. After PyKEEN's evaluator has run, they hold a tensor computed without gradient,
  and a gradient taken through them is silently wrong (or, once a backward pass has freed the graph, fails).
  :func:`clear_caches` drops them before and after every forward pass kgtracin makes, so every loss is computed
  from the weights through the whole message passing.
* **Dtypes.** PyKEEN's R-GCN builds its edge weights in float32 whatever the model's dtype; a float64 model then
  fails inside ``torch.spmm``. A forward pre-hook casts the edge weights to the layer input's dtype.
* **Unique lookups.** ``Representation(unique=True)`` looks up the distinct ids and expands them again: an
  optimisation with the same values and gradients as a plain lookup, but one whose lookup does not line up with
  the batch and that ``torch.func`` cannot vectorise. :func:`prepare` turns it off.
* **Refusals.** Inductive models score with a separate inference graph, and kgtracin explains transductive
  models only: :func:`check_supported` refuses them with one line.
"""

from __future__ import annotations

from torch import nn

from ..errors import KGTracinError

__all__ = ["check_supported", "cache_holders", "clear_caches", "prepare"]

#: attributes through which PyKEEN representations cache enriched (message-passed) tables
_CACHE_ATTRIBUTES = ("enriched_embeddings", "enriched_representations")
_HOOK_MARK = "_kgtracin_edge_weight_cast"


def check_supported(model: nn.Module) -> None:
    """Refuse a model kgtracin cannot differentiate exactly.

    :raises KGTracinError: for an inductive model
    """
    from pykeen.models.inductive import InductiveERModel

    if isinstance(model, InductiveERModel):
        raise KGTracinError(
            f"{type(model).__name__} is an inductive model (it scores test triples on a separate inference graph); "
            "kgtracin explains transductive models only: train a transductive one such as NodePiece"
        )


def cache_holders(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, attribute) pairs through which the model caches enriched representations (usually none)."""
    return [(module, attribute) for module in model.modules() for attribute in _CACHE_ATTRIBUTES
            if hasattr(module, attribute)]


def clear_caches(holders: nn.Module | list[tuple[nn.Module, str]]) -> None:
    """Drop every cached enriched representation, so the next forward pass recomputes it with gradient.

    :param holders: a model, or its :func:`cache_holders` (found once, for a loop that clears per forward pass)
    """
    for module, attribute in cache_holders(holders) if isinstance(holders, nn.Module) else holders:
        setattr(module, attribute, None)


def _cast_edge_weights(module, args, kwargs):
    weights, x = kwargs.get("edge_weights"), kwargs.get("x")
    if weights is not None and x is not None and weights.dtype != x.dtype:
        kwargs["edge_weights"] = weights.to(x.dtype)
    return args, kwargs


def prepare(model: nn.Module) -> nn.Module:
    """Check the model and make its forward pass fit for per-triple gradients (idempotent).

    :return: the same model: caches cleared, plain lookups instead of unique ones, R-GCN layers casting their
        edge weights
    """
    from pykeen.nn.message_passing import RGCNRepresentation
    from pykeen.nn.representation import Representation

    check_supported(model)
    clear_caches(model)
    for module in model.modules():
        if isinstance(module, Representation) and getattr(module, "unique", False):
            module.unique = False
        if isinstance(module, RGCNRepresentation):
            for layer in module.layers:
                if not getattr(layer, _HOOK_MARK, False):
                    layer.register_forward_pre_hook(_cast_edge_weights, with_kwargs=True)
                    setattr(layer, _HOOK_MARK, True)
    return model
