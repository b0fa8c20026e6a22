"""Every PyKEEN internal that kgtracin touches, in one file: the one to change when PyKEEN's internals change.

kgtracin is written against PyKEEN 1.11. Besides its public API (``score_hrt``, ``score_t``, ``score_h``,
``model_resolver``, the training loops and the evaluator), it reads a few private attributes; each is read
here and nowhere else:

* ``Embedding._embeddings`` (the ``nn.Embedding`` inside a plain representation) and its ``weight``;
* ``Embedding._plain_forward`` (to tell a plain lookup from a subclass that transforms it);
* ``Representation._shape`` (the shape of one row, e.g. ``(d,)`` or ``(d, 2)`` for complex rows);
* ``ERModel.relation_inverter`` (dataset relation ``r`` is internal relation ``2 r`` with inverse triples);
* ``Interaction.head_indices`` / ``tail_indices`` (which entity representations fill the head and tail slots);
* the caches of message-passing representations, below.

What PyKEEN models need before kgtracin differentiates them:

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

import torch
from torch import nn

from .errors import KGTracinError

__all__ = [
    "check_supported",
    "cache_holders",
    "clear_caches",
    "prepare",
    "is_plain_embedding",
    "embedding_module",
    "embedding_table",
    "table_name",
    "row_shape",
    "to_internal",
    "inverse_relations",
    "entity_slots",
]

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
    return [
        (module, attribute)
        for module in model.modules()
        for attribute in _CACHE_ATTRIBUTES
        if hasattr(module, attribute)
    ]


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


def is_plain_embedding(representation: nn.Module) -> bool:
    """Whether the representation is PyKEEN's ``Embedding`` looking up one stored row per id, unchanged (not a
    subclass with its own lookup, and not ``unique=True``, which looks up the sorted distinct ids)."""
    from pykeen.nn.representation import Embedding

    return (
        isinstance(representation, Embedding)
        and type(representation)._plain_forward is Embedding._plain_forward
        and not representation.unique
    )


def embedding_module(representation: nn.Module) -> nn.Embedding:
    """The ``nn.Embedding`` that stores a PyKEEN ``Embedding``'s rows."""
    return representation._embeddings


def embedding_table(representation: nn.Module) -> torch.Tensor:
    """The stored rows of a PyKEEN ``Embedding``. :return: shape: (num_rows, D), D the row's numbers (real)"""
    return representation._embeddings.weight


def table_name(group: str, index: int) -> str:
    """The parameter name of a representation's table: ``table_name("entity_representations", 0)`` is
    ``"entity_representations.0._embeddings.weight"``."""
    return f"{group}.{index}._embeddings.weight"


def row_shape(representation: nn.Module) -> tuple[int, ...]:
    """The shape of one row as the interaction sees it, e.g. ``(d,)``; complex rows are stored as ``(d, 2)``
    reals and seen as ``(d,)`` complex numbers."""
    return tuple(representation._shape)


def to_internal(model: nn.Module, hrt: torch.Tensor) -> torch.Tensor:
    """Dataset ids to the model's internal ids: relation ``r`` becomes ``2 r`` with inverse triples.

    :param hrt: shape: (B, 3), dtype: long
    :return: shape: (B, 3), dtype: long (the same tensor without inverse triples)
    """
    if model.use_inverse_triples:
        return model.relation_inverter.map(batch=hrt, index=1, invert=False)
    return hrt


def inverse_relations(model: nn.Module, relations: torch.Tensor) -> torch.Tensor:
    """The internal id of each internal relation's inverse (models with inverse triples).

    :param relations: shape: (B,), internal ids
    :return: shape: (B,)
    """
    return model.relation_inverter.get_inverse_id(relations)


def entity_slots(model: nn.Module) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The entity representations that fill the head slot, and those that fill the tail slot, by index."""
    return tuple(model.interaction.head_indices), tuple(model.interaction.tail_indices)
