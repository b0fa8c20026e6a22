"""The ``bce`` loss: ``softplus(-s(h, r, t))``, BCE-with-logits of the triple's score against label 1.

It matches training with sLCWA and a pointwise loss (softplus, BCE), and it is the seed's per-triple loss. Its
gradient touches only the rows the triple looks up and the layers it passes through, so the closed form needs
nothing beyond :class:`~kgtracin.losses.base.TripleLoss`'s defaults.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import TripleLoss

__all__ = ["BCELoss", "LOSS"]


class BCELoss(TripleLoss):
    """``softplus(-score(h, r, t))``."""

    name = "bce"
    training_losses = frozenset({"softplus", "softplusloss", "bcewithlogits", "bcewithlogitsloss", "bce"})

    def __call__(self, model, hrt: torch.Tensor) -> torch.Tensor:
        return F.softplus(-model.score_hrt(hrt).view(-1))


LOSS = BCELoss
