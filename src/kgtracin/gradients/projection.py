"""Opt-in random projection of the dense gradient factors: approximate TracIn for very many test triples.

Exact TracIn pays ``N x M x d`` multiply-adds for every dense factor of dimension ``d`` (ConvE's fc layer
input has d = 10,368), which for a whole test split costs far more than an epoch. A :class:`Projection`
replaces every dense factor longer than ``dim`` by a CountSketch of it (Clarkson and Woodruff; TRAK projects
the full gradient in the same spirit):

* coordinate ``i`` of a factor gets a random sign ``s_i`` and a bucket ``b_i``; ``(S x)_b = sum_{b_i = b} s_i x_i``;
* ``E[<S x, S y>] = <x, y>``: the sketched inner products are unbiased, with a variance that falls as ``1 / dim``;
* buckets are balanced (coordinate ``perm_j`` goes to bucket ``j mod dim``), and applying ``S`` costs one
  gather and one sum, not a matrix product.

What is sketched: a linear layer's inputs ``x`` and output gradients ``delta`` (so its weight gradient
``delta x^T`` becomes ``S_out delta (S_in x)^T`` and its bias gradient ``S_out delta``), and each materialised
per-triple gradient of a small layer (conv, batch norm, torch.func fallback), per parameter. Embedding rows
are never sketched: they are exact and already cheap. The sketch of a factor depends only on the seed, the
factor's name and its length, so the training and test sides (and every checkpoint) use the same one.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

from ..errors import KGTracinError

__all__ = ["Projection", "Sketch"]


@dataclass(frozen=True)
class Sketch:
    """A CountSketch from length ``d`` to ``dim`` (``dim < d``).

    :param perm: shape: (d,), dtype: long; position ``j`` of the permuted factor goes to bucket ``j mod dim``
    :param signs: shape: (d,); +1 or -1, aligned with ``perm``
    """

    perm: torch.Tensor
    signs: torch.Tensor
    dim: int

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: shape: (..., d) :return: shape: (..., dim)"""
        d = self.perm.shape[0]
        width = math.ceil(d / self.dim)
        y = x[..., self.perm.to(x.device)] * self.signs.to(x.device, x.dtype)
        if width * self.dim > d:
            y = torch.nn.functional.pad(y, (0, width * self.dim - d))
        return y.reshape(*x.shape[:-1], width, self.dim).sum(dim=-2)


class Projection:
    """Sketches dense gradient factors to at most ``dim`` numbers each, reproducibly from ``seed``."""

    def __init__(self, dim: int, seed: int = 0):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise KGTracinError(f"projection dimension must be a positive integer, got {dim!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise KGTracinError(f"projection seed must be an integer, got {seed!r}")
        self.dim, self.seed = dim, seed
        self._cache: dict[tuple[str, int], Sketch] = {}

    def __repr__(self) -> str:
        return f"Projection(dim={self.dim}, seed={self.seed})"

    def sketch(self, key: str, d: int) -> Sketch | None:
        """The sketch of the factor named ``key`` of length ``d``; None when ``d <= dim`` (kept exact)."""
        if d <= self.dim:
            return None
        if (key, d) not in self._cache:
            generator = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{key}:{d}".encode()))
            perm = torch.randperm(d, generator=generator)
            signs = torch.randint(0, 2, (d,), generator=generator) * 2 - 1
            self._cache[(key, d)] = Sketch(perm, signs.to(torch.int8), self.dim)
        return self._cache[(key, d)]

    def apply(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` sketched along its last dimension, or ``x`` itself when it is short enough."""
        sketch = self.sketch(key, x.shape[-1])
        return x if sketch is None else sketch.apply(x)
