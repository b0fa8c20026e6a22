"""The reference: one backward pass per triple (the seed's sequential baseline)."""

from __future__ import annotations

import torch

from ..adapters import ModelAdapter
from ._factors import DenseGroup, Features
from .base import GradientComputer, flat_dense

__all__ = ["LoopComputer"]


class LoopComputer(GradientComputer):
    """Per-triple gradients by one ``torch.autograd.grad`` call per triple. Slow, simple, the reference."""

    name = "loop"

    def featurize(self, adapter: ModelAdapter, hrt: torch.Tensor) -> Features:
        params = list(adapter.parameters.values())
        rows = []
        for i in range(hrt.shape[0]):
            with torch.enable_grad():
                loss = adapter.losses(hrt[i : i + 1]).sum()
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(flat_dense([None if g is None else g.unsqueeze(0) for g in grads], params, 1))
        return Features({"all": DenseGroup(torch.cat(rows, dim=0))})
