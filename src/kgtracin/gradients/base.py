"""The gradient-computer role: per-triple gradient factors of a batch."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..adapters import ModelAdapter
from ._factors import Features

__all__ = ["GradientComputer"]


class GradientComputer(ABC):
    """Computes the per-triple gradient factors of a batch of triples for one model state.

    All computers are exact: the kernels of their features agree with those of the ``loop`` reference.
    """

    #: the method name, as in ``TracIn(method=...)``
    name: str

    @abstractmethod
    def featurize(self, adapter: ModelAdapter, hrt: torch.Tensor) -> Features:
        """Gradient factors of ``softplus(-score)`` for each triple.

        :param adapter: the model and its selected parameters
        :param hrt: shape: (B, 3), dtype: long, dataset ids
        """

    def batch_limit(self, adapter: ModelAdapter) -> int | None:
        """The largest batch this computer should be given for this model by default (None: no limit)."""
        return None

    def describe(self, adapter: ModelAdapter) -> dict[str, str]:
        """Which path computes each selected parameter's gradient: name -> path."""
        return {name: self.name for name in adapter.parameters}


def flat_dense(grads: list[torch.Tensor | None], params: list[torch.Tensor], batch: int) -> torch.Tensor:
    """Flatten per-triple gradients into one matrix; missing (unused) gradients become zeros.

    :param grads: per parameter, shape (B, *param.shape) or None
    :return: shape: (B, sum of parameter sizes)
    """
    parts = [
        torch.zeros(batch, p.numel(), dtype=p.dtype, device=p.device) if g is None else g.reshape(batch, -1)
        for g, p in zip(grads, params)
    ]
    return torch.cat(parts, dim=1)
