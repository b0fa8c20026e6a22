"""Influence on a *sum* of test losses without per-pair kernels: one summed gradient, then directional derivatives.

TracIn is linear in the test gradient, so ``sum_j <g(z_i), g(z'_j)> = <g(z_i), G>`` with ``G = sum_j g(z'_j)``,
one vector the size of the selected parameters. ``G`` is a plain backward pass of the summed test loss, and
``<g(z_i), G>`` for a whole batch of training triples is one Jacobian-vector product of the per-triple losses
along ``G`` (forward-mode autodiff, ``torch.func.jvp``). That costs a few forward passes per batch, whatever the
number of test triples, against a (test x batch) kernel per batch for the pairwise path. No per-triple gradient
is formed.

All-entity scores (the ``softmax`` loss) go through :func:`kgtracin.scorers.matrix_products`, as training does:
no (batch x entities x dim) temporary. Where that has no forward-mode derivative (``torch.cdist``), PyKEEN's own
forward is used; where that has none either, the same products come from reverse mode twice
(``d/du <J^T u, G>`` = ``J G``), which needs only what training's backward pass needs, differentiated once more.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping

import torch
from torch.func import functional_call, jvp

from ..adapters import ModelAdapter
from ..scorers import matrix_products

logger = logging.getLogger(__name__)

__all__ = ["summed_gradient", "directional_derivatives"]


def summed_gradient(
    adapter: ModelAdapter, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]
) -> dict[str, torch.Tensor]:
    """``G = sum_j w_j grad l(z'_j)`` over the adapter's selected parameters.

    :param batches: ``(hrt, weights)`` pairs: hrt of shape (b, 3), dtype long, dataset ids; weights of shape
        (b,) or ``None`` for all ones
    :return: parameter name -> tensor of the parameter's shape
    """
    names = list(adapter.parameters)
    leaves = _leaves(adapter)
    total = [torch.zeros_like(p) for p in leaves.values()]
    for hrt, weights in batches:
        with torch.enable_grad(), matrix_products(adapter.model):  # all-entity scores without (B, E, d) temporaries
            losses = functional_call(adapter.scorer, leaves, (adapter.to_internal(hrt),))
            loss = losses.sum() if weights is None else (losses * weights.to(losses)).sum()
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        for acc, grad in zip(total, grads):
            if grad is not None:
                acc.add_(grad)
    return dict(zip(names, total))


def _leaves(adapter: ModelAdapter) -> dict[str, torch.Tensor]:
    """Fresh leaf copies of the selected parameters, keyed for ``functional_call`` on the adapter's scorer: the
    gradients never depend on what earlier ``torch.func`` calls left in the module."""
    return {f"model.{name}": p.detach().requires_grad_() for name, p in adapter.parameters.items()}


def directional_derivatives(adapter: ModelAdapter, hrt: torch.Tensor, direction: Mapping[str, torch.Tensor]):
    """``<grad l(z_b), direction>`` for every triple of the batch, exactly.

    :param hrt: shape: (B, 3), dtype: long, dataset ids
    :param direction: parameter name -> tensor of the parameter's shape (:func:`summed_gradient`)
    :return: shape: (B,)
    """
    internal = adapter.to_internal(hrt)
    kind = type(adapter.model)
    for products in (True, False)[_FALLBACK.get(kind, 0) :]:
        out = _forward_mode(adapter, internal, direction, products)
        if out is not None:
            return out
        _FALLBACK[kind] = _FALLBACK.get(kind, 0) + 1
    return _double_backward(adapter, internal, direction)


#: model class -> how many forward-mode ways failed for it: 1, not through the matrix-product scorers (e.g.
#: ``torch.cdist`` has no forward-mode rule); 2, not at all (reverse mode twice, through PyKEEN's own forward)
_FALLBACK: dict[type, int] = {}


def _forward_mode(
    adapter: ModelAdapter, internal: torch.Tensor, direction: Mapping[str, torch.Tensor], products: bool
) -> torch.Tensor | None:
    """``J G`` by ``torch.func.jvp``, or ``None`` where an operation of the forward has no forward-mode rule.

    :param internal: shape: (B, 3), dtype: long, internal ids
    :param products: score all entities through :func:`~kgtracin.scorers.matrix_products`
    :return: shape: (B,), or None
    """
    params = {f"model.{name}": p.detach() for name, p in adapter.parameters.items()}
    tangents = {f"model.{name}": direction[name] for name in adapter.parameters}
    try:
        with matrix_products(adapter.model) if products else contextlib.nullcontext():
            _, out = jvp(lambda p: functional_call(adapter.scorer, p, (internal,)), (params,), (tangents,))
    except (NotImplementedError, RuntimeError) as error:
        message = str(error).lower()
        if "forward" in message or "jvp" in message or "not implemented" in message:
            logger.info(
                "no forward-mode derivative for %s%s (%s)",
                type(adapter.model).__name__,
                " through the matrix-product scorers" if products else "",
                error,
            )
            return None
        raise
    return out.detach()


def _double_backward(adapter: ModelAdapter, internal: torch.Tensor, direction: Mapping[str, torch.Tensor]):
    """``J G`` as ``d/du <J^T u, G>``: the per-triple losses' Jacobian times ``G``, by reverse mode twice.

    :param internal: shape: (B, 3), dtype: long, internal ids
    :return: shape: (B,)
    """
    leaves = _leaves(adapter)
    with torch.enable_grad():  # PyKEEN's own forward: its backward can be differentiated again (cdist's cannot)
        losses = functional_call(adapter.scorer, leaves, (internal,))
        u = torch.zeros_like(losses, requires_grad=True)
        grads = torch.autograd.grad(losses, list(leaves.values()), grad_outputs=u, create_graph=True, allow_unused=True)
        inner = sum((g * direction[n]).sum() for n, g in zip(adapter.parameters, grads) if g is not None)
        if not isinstance(inner, torch.Tensor) or not inner.requires_grad:  # no selected parameter is used
            return torch.zeros_like(losses).detach()
        (out,) = torch.autograd.grad(inner, u)
    return out.detach()
