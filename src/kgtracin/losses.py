"""The per-triple losses whose gradients TracIn takes: ``bce`` and ``softmax``.

A loss maps a batch of triples (the model's *internal* ids) to one differentiable loss per triple. The
``loop`` and ``vmap`` methods differentiate it as it stands; the ``fast`` method uses the structure that
each loss declares (see :mod:`kgtracin.gradients.fast` and :mod:`kgtracin.gradients.candidates`).

* ``bce``: ``softplus(-s(h, r, t))``, BCE-with-logits of the triple's score against label 1. It matches
  training with sLCWA and a pointwise loss (softplus, BCE).
* ``softmax``: the 1-N cross-entropy of the triple in both directions, over all entities, unfiltered:
  ``-log softmax_t' s(h, r, t')[t] - log softmax_h' s(h', r, t)[h]``. It matches LCWA training with a
  cross-entropy (softmax) loss, and asks the ranking question "why is t ranked above the other tails?".
  For models trained with inverse triples the head direction is scored as PyKEEN trained it: the tails of
  ``(t, r_inv, ?)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch.nn import functional as F

from .errors import KGTracinError

__all__ = ["TripleLoss", "BCELoss", "SoftmaxLoss", "LOSSES", "make_loss", "loss_for_training"]


class TripleLoss(ABC):
    """One loss per triple, on internal ids, in ``eval()`` mode."""

    #: the name used by ``TracIn(loss=...)`` and ``--loss``
    name: str

    @abstractmethod
    def __call__(self, model, hrt: torch.Tensor) -> torch.Tensor:
        """Per-triple losses.

        :param model: a PyKEEN ``ERModel``
        :param hrt: shape: (B, 3), dtype: long, *internal* ids (relation ``2 r`` with inverse triples)
        :return: shape: (B,)
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BCELoss(TripleLoss):
    """``softplus(-score(h, r, t))``: the seed's per-triple loss."""

    name = "bce"

    def __call__(self, model, hrt: torch.Tensor) -> torch.Tensor:
        return F.softplus(-model.score_hrt(hrt).view(-1))


def head_queries(model, hrt: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The batch that scores all candidate heads of each triple, as the model was trained to.

    :param hrt: shape: (B, 3), internal ids
    :return: ``(batch, inverse)``: with inverse triples, ``(t, r_inv)`` pairs for ``score_t`` (inverse True);
        otherwise ``(r, t)`` pairs for ``score_h``
    """
    if model.use_inverse_triples:
        inverse = model.relation_inverter.get_inverse_id(hrt[:, 1])
        return torch.stack([hrt[:, 2], inverse], dim=1), True
    return hrt[:, 1:], False


class SoftmaxLoss(TripleLoss):
    """The 1-N cross-entropy in both directions, over all entities (unfiltered)."""

    name = "softmax"

    def __call__(self, model, hrt: torch.Tensor) -> torch.Tensor:
        tail = F.cross_entropy(model.score_t(hrt[:, :2]), hrt[:, 2], reduction="none")
        batch, inverse = head_queries(model, hrt)
        head_scores = model.score_t(batch) if inverse else model.score_h(batch)
        return tail + F.cross_entropy(head_scores, hrt[:, 0], reduction="none")


LOSSES: dict[str, type[TripleLoss]] = {cls.name: cls for cls in (BCELoss, SoftmaxLoss)}

#: PyKEEN loss names (lower case, as the resolver normalises them) whose training objective is a softmax.
_SOFTMAX_TRAINING = {"crossentropy", "crossentropyloss", "softmax", "softmaxcrossentropy", "nssa"}


def make_loss(loss: str | TripleLoss) -> TripleLoss:
    """A loss by name (``bce`` or ``softmax``), or the loss itself."""
    if isinstance(loss, TripleLoss):
        return loss
    try:
        return LOSSES[loss]()
    except (KeyError, TypeError):
        raise KGTracinError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}") from None


def loss_for_training(training_loss: str | None) -> str:
    """The TracIn loss that matches a training loss: ``softmax`` for a softmax / cross-entropy, else ``bce``."""
    if training_loss is None:
        return "bce"
    key = training_loss.lower().replace("_", "").replace("-", "")
    return "softmax" if key in _SOFTMAX_TRAINING else "bce"
