"""The per-triple losses whose gradients TracIn takes: ``bce`` and ``softmax``.

A loss maps a batch of triples (the model's *internal* ids) to one differentiable loss per triple. The ``loop``
and ``vmap`` methods differentiate it as it stands; the ``fast`` method uses the structure that each loss declares
(:class:`~kgtracin.losses.base.TripleLoss`): :mod:`.bce` (``softplus(-s)``, for sLCWA-trained models) and
:mod:`.softmax` (the 1-N cross-entropy in both directions, for LCWA-trained models).
"""

from __future__ import annotations

from ..errors import KGTracinError
from .base import TripleLoss
from .bce import BCELoss
from .softmax import SoftmaxLoss

__all__ = ["TripleLoss", "BCELoss", "SoftmaxLoss", "LOSSES", "make_loss", "loss_for_training"]

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
