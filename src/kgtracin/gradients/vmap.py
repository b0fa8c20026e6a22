"""Per-triple gradients with ``torch.func``: ``vmap(grad(loss))`` over ``functional_call`` (the seed's version)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.func import functional_call, grad, vmap

from ..adapters import ModelAdapter
from ..errors import KGTracinError
from ._factors import DenseGroup, Features
from .base import GradientComputer, flat_dense

__all__ = ["VmapComputer", "vmap_dense_grads"]


def vmap_dense_grads(adapter: ModelAdapter, hrt: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Dense per-triple gradients of the named parameters, vectorised with ``torch.func``.

    :param hrt: shape: (B, 3), dtype: long, dataset ids
    :param names: parameter names (relative to the model)
    :return: shape: (B, sum of the parameters' sizes)
    """
    internal = adapter.to_internal(hrt)
    params = {f"model.{name}": adapter.parameters[name].detach() for name in names}

    def loss_one(p: Mapping[str, torch.Tensor], triple: torch.Tensor) -> torch.Tensor:
        return functional_call(adapter.scorer, p, (triple.unsqueeze(0),)).sum()

    try:
        grads = vmap(grad(loss_one), in_dims=(None, 0))(params, internal)
    except RuntimeError as error:  # a model whose forward torch.func cannot vectorise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KGTracinError(
            f"torch.func cannot vectorise {type(adapter.model).__name__} ({first[:120]}); use method='loop', "
            "which is exact (one backward pass per triple)"
        ) from None
    keys = list(params)
    return flat_dense([grads[k] for k in keys], [params[k] for k in keys], hrt.shape[0])


class VmapComputer(GradientComputer):
    """Dense per-triple gradients of all selected parameters in one vectorised call per batch."""

    name = "vmap"

    def featurize(self, adapter: ModelAdapter, hrt: torch.Tensor) -> Features:
        return Features({"all": DenseGroup(vmap_dense_grads(adapter, hrt, list(adapter.parameters)))})
