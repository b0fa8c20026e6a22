"""Closed forms of per-triple layer gradients, by layer type: a registry that the fast method consults.

For a layer inside the interaction with input ``x`` and output gradient ``delta`` (one per triple, from the
batch's single backward pass), the weight gradient of one triple is a function of ``(x, delta)`` alone
(``docs/mathematics.md``, section 5):

* ``nn.Linear`` (``outer-product``): ``delta x^T`` summed over the triple's calls; kept as the factors
  ``(x, delta)``, never multiplied out (:class:`~kgtracin.gradients._factors.OuterGroup`);
* ``nn.Conv2d`` (``conv2d-unfold``): ``delta`` times the unfolded input patches, materialised per triple because
  the kernel is small;
* eval-mode batch norm (``batchnorm-eval``): ``sum_p delta x_hat`` and ``sum_p delta``, per channel.

A layer of any other type (or a configuration not listed, e.g. a grouped convolution) has no entry, and its
parameters fall back to ``torch.func`` per triple (exact, slower). Adding a closed form is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["LayerForm", "LAYER_FORMS", "layer_form"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class LayerForm:
    """One layer type's closed form.

    :param path: the name that ``describe()`` and the log give the path
    :param supports: whether a module is of this type, in a configuration the form covers
    :param grads: ``(module, x (B, ...), delta (B, ...)) -> (weight (B, P_w), bias (B, P_b))`` per-triple
        gradients; ``None`` for the outer-product form, which keeps the factors instead
    """

    path: str
    supports: Callable[[nn.Module], bool]
    grads: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None


def _linear_supported(module: nn.Module) -> bool:
    return type(module) is nn.Linear


def _conv_supported(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _bn_supported(module: nn.Module) -> bool:
    return type(module) in _BATCH_NORMS and module.affine and module.running_mean is not None


def _conv_grads(module: nn.Conv2d, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triple Conv2d gradients. :return: weight (B, C_out * C_in * kh * kw), bias (B, C_out)"""
    patches = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
    delta = delta.flatten(2)  # (B, C_out, L)
    weight = torch.bmm(delta, patches.transpose(1, 2))  # (B, C_out, C_in * kh * kw)
    return weight.flatten(1), delta.sum(dim=2)


def _bn_grads(module: nn.Module, x: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-triple eval-mode batch-norm gradients. :return: scale (B, C), shift (B, C)

    With ``x_hat = (x - mean) / std``: scale = sum_p delta x_hat = (sum_p delta x - mean sum_p delta) / std and
    shift = sum_p delta, computed without any full-size temporary.
    """
    batch, channels = x.shape[0], x.shape[1]
    x, delta = x.reshape(batch, channels, -1), delta.reshape(batch, channels, -1)
    shift = delta.sum(dim=2)
    dx = torch.einsum("bcp,bcp->bc", delta, x)
    std = torch.sqrt(module.running_var + module.eps)
    return (dx - module.running_mean * shift) / std, shift


#: the closed forms, tried in order
LAYER_FORMS: tuple[LayerForm, ...] = (
    LayerForm("outer-product", _linear_supported, None),
    LayerForm("conv2d-unfold", _conv_supported, _conv_grads),
    LayerForm("batchnorm-eval", _bn_supported, _bn_grads),
)


def layer_form(module: nn.Module) -> LayerForm | None:
    """The closed form of a module's per-triple gradients, or None when it has none."""
    return next((form for form in LAYER_FORMS if form.supports(module)), None)
