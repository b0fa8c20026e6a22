"""The per-triple losses whose gradients TracIn takes: one module per loss, named as the loss.

A loss maps a batch of triples (the model's *internal* ids) to one differentiable loss per triple. The ``loop``
and ``vmap`` methods differentiate it as it stands; the ``fast`` method uses the structure that each loss declares
(:class:`~kgtracin.losses.base.TripleLoss`):

* :mod:`.bce`: ``softplus(-s)``, for models trained with sLCWA and a pointwise loss;
* :mod:`.softmax`: the 1-N cross-entropy in both directions, for models trained with LCWA and a cross-entropy.

The registry is the package itself: every module here except ``base`` is a loss, whose name is the module's and
whose class is the module's ``LOSS``. Adding a loss is adding one module. The names are found without importing
torch, so that the configuration and the command line can list them.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from ..errors import KGTracinError

if TYPE_CHECKING:
    from .base import TripleLoss
    from .bce import BCELoss
    from .softmax import SoftmaxLoss

__all__ = ["TripleLoss", "BCELoss", "SoftmaxLoss", "LOSS_NAMES", "loss_class", "make_loss", "loss_for_training"]

#: the losses by name: the modules of this package
LOSS_NAMES: tuple[str, ...] = tuple(
    sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base" and not m.name.startswith("_"))
)
#: the loss a model gets when its training loss matches no loss's ``training_losses``
FALLBACK_LOSS = "bce"

_CLASSES = {"TripleLoss": "base", "BCELoss": "bce", "SoftmaxLoss": "softmax"}


def __getattr__(name: str):
    if name in _CLASSES:
        return getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def loss_class(name: str) -> type[TripleLoss]:
    """The loss class by name.

    :raises KGTracinError: for an unknown name
    """
    if not isinstance(name, str) or name not in LOSS_NAMES:
        raise KGTracinError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
    return importlib.import_module(f".{name}", __name__).LOSS


def make_loss(loss: str | TripleLoss) -> TripleLoss:
    """A loss by name (``bce`` or ``softmax``), or the loss itself."""
    from .base import TripleLoss

    if isinstance(loss, TripleLoss):
        return loss
    return loss_class(loss)()


def loss_for_training(training_loss: str | None) -> str:
    """The TracIn loss that matches a PyKEEN training loss: the loss that lists it in ``training_losses``
    (``softmax`` for a softmax / cross-entropy), else ``bce``."""
    if training_loss is None:
        return FALLBACK_LOSS
    key = training_loss.lower().replace("_", "").replace("-", "")
    for name in LOSS_NAMES:
        if key in loss_class(name).training_losses:
            return name
    return FALLBACK_LOSS
