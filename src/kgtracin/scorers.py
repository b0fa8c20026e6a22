"""Matrix-product scoring for interactions that PyKEEN scores by broadcasting, for training at scale.

PyKEEN's ``DistMultInteraction`` scores all tails of a batch as ``(h * r * t).sum(-1)`` over broadcast shapes
``(B, 1, d) x (1, E, d)``: it builds a ``(B, E, d)`` tensor, 7.8 GB for 256 queries on a 38k-entity graph
at d = 200, and an LCWA epoch takes about an hour on two cores. The same scores are one matrix product,
``(h * r) @ t^T``, which ``torch.einsum`` contracts without the temporary.

:func:`use_matrix_products` swaps such an interaction's ``forward`` for the contraction, on the model's own
instance (:func:`matrix_products` does it for the length of a ``with`` block: training, evaluation and the
model's view of a prediction use it; TracIn's gradients keep PyKEEN's own forward): the model keeps its class
and its state dict (the interaction holds no parameters), and every score
and gradient is the same up to floating-point rounding (tested against PyKEEN's own forward in float64).
ComplEx, which PyKEEN contracts with a three-operand ``einsum``, gets one real matrix product of (re, im) rows.
Interactions whose scores are distances (TransE, RotatE) have no matrix-product form that keeps the scores to
rounding (``|x|^2 + |y|^2 - 2 <x, y>`` cancels); for all candidates they get ``torch.cdist`` in its direct mode,
which forms each (query, candidate) distance from the coordinates as PyKEEN does, without the ``(B, E, d)``
difference tensor (on a CPU; PyTorch's CUDA backward of ``cdist`` allocates a buffer of that size, so on a GPU only
the forward pass is spared it).
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["use_matrix_products", "matrix_products", "MATRIX_PRODUCT_FORMS"]


def _trilinear(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sum_d h_d r_d t_d`` over broadcast batch shapes, as a contraction (no ``(*batch, d)`` temporary).

    The two operands whose product is smallest are multiplied first (``h * r`` when scoring all tails, ``r * t``
    when scoring all heads), and the product is contracted with the third by a matrix product (``torch.einsum``
    for other broadcast shapes; ``benchmarks/train_scorer.py`` times it against the bound).

    :param h: shape: ``(*batch_dims, d)``, real or complex
    :param r: shape: ``(*batch_dims, d)``
    :param t: shape: ``(*batch_dims, d)``
    :return: shape: ``batch_dims``
    """
    first, second, last = min(
        ((h, r, t), (r, t, h), (h, t, r)), key=lambda xs: math.prod(torch.broadcast_shapes(xs[0].shape, xs[1].shape))
    )
    queries = first * second
    if queries.dim() == 3 and last.dim() == 3:  # all candidates: (B, 1, d) against (1, E, d), one matrix product
        if queries.shape[1] == 1 and last.shape[0] == 1:
            return queries[:, 0] @ last[0].transpose(0, 1)
        if queries.shape[0] == 1 and last.shape[1] == 1:
            return last[:, 0] @ queries[0].transpose(0, 1)
    return torch.einsum("...d,...d->...", queries, last)


def _distmult(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """DistMult: ``sum_d h_d r_d t_d``. :return: shape: ``batch_dims``"""
    return _trilinear(h, r, t)


def _pairs(x: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
    """Complex rows (n, d) as real rows (n, 2 d): ``(re_1, sign * im_1, re_2, sign * im_2, ...)``."""
    parts = torch.view_as_real(x)
    if sign != 1.0:
        parts = parts * torch.tensor([1.0, sign], dtype=parts.dtype, device=parts.device)
    return parts.reshape(x.shape[0], -1)


def _complex(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ComplEx: ``Re(sum_d h_d r_d conj(t_d))`` on complex representations. :return: shape: ``batch_dims``

    All tails: with ``q = h r``, ``Re(q conj(t)) = q_re t_re + q_im t_im``, one real matrix product of rows of
    length 2 d. All heads: with ``q = r conj(t)``, ``Re(h q) = h_re q_re - h_im q_im``. Other shapes: PyKEEN's
    own contraction.
    """
    if h.dim() == r.dim() == t.dim() == 3:
        if t.shape[0] == 1 and h.shape[1] == r.shape[1] == 1:
            return _pairs((h * r)[:, 0]) @ _pairs(t[0]).transpose(0, 1)
        if h.shape[0] == 1 and r.shape[1] == t.shape[1] == 1:
            return _pairs((r * torch.conj(t)).resolve_conj()[:, 0], -1.0) @ _pairs(h[0]).transpose(0, 1)
    return torch.real(torch.einsum("...d,...d,...d->...", h, r, torch.conj(t)))


def _conve(self, h: torch.Tensor, r: torch.Tensor, t: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """ConvE: ``<fc(conv([h; r])), t> + b_t``, linear in the tail. For all tails, PyKEEN's forward runs as it is on
    the batch's own (h, r) with the identity as the "tails" (so it returns ``x = fc(conv([h; r]))`` exactly, with
    the same dropout draws), and ``x`` meets every tail in one matrix product. Other shapes: PyKEEN's forward.

    :param h: shape: ``(*batch_dims, d)``
    :param r: shape: ``(*batch_dims, d)``
    :param t: the tail embeddings ``(*batch_dims, d)`` and biases ``batch_dims`` (or with a trailing 1)
    :return: shape: ``batch_dims``
    """
    t_emb, t_bias = t
    forward = type(self).forward
    if (
        h.dim() == r.dim() == t_emb.dim() == 3
        and h.shape[1] == r.shape[1] == 1
        and t_emb.shape[0] == 1
        and h.shape[0] == r.shape[0]
    ):
        dim = h.shape[-1]
        identity = torch.eye(dim, dtype=t_emb.dtype, device=t_emb.device).unsqueeze(0)  # (1, d, d)
        zeros = t_bias.new_zeros((1, dim) + tuple(t_bias.shape[2:]))
        x = forward(self, h, r, (identity, zeros))  # (B, d) or (B, d, 1): x_i = <x, e_i> + 0, exactly
        x = x.reshape(h.shape[0], dim)
        return x @ t_emb[0].transpose(0, 1) + t_bias.reshape(1, -1)
    return forward(self, h, r, t)


def _distances(queries: torch.Tensor, candidates: torch.Tensor, p, power_norm: bool) -> torch.Tensor:
    """``-|q_b - c_e|_p`` (``-|q_b - c_e|_p^p`` with ``power_norm``), every query against every candidate.

    :param queries: shape: (B, d), real or complex (complex: the 2 d real coordinates)
    :param candidates: shape: (E, d)
    :return: shape: (B, E)
    """
    if queries.is_complex():
        queries = torch.view_as_real(queries).reshape(queries.shape[0], -1)
        candidates = torch.view_as_real(candidates).reshape(candidates.shape[0], -1)
    norms = torch.cdist(queries, candidates, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    return -(norms**p) if power_norm else -norms


def _all_candidates(h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> str | None:
    """``"tails"`` for (B, 1, d) queries against (1, E, d) tails, ``"heads"`` for (1, E, d) heads against (B, 1, d)
    queries, else None."""
    if not h.dim() == r.dim() == t.dim() == 3 or r.shape[1] != 1:
        return None
    if t.shape[0] == 1 and h.shape[1] == 1 and h.shape[0] == r.shape[0]:
        return "tails"
    if h.shape[0] == 1 and t.shape[1] == 1 and t.shape[0] == r.shape[0]:
        return "heads"
    return None


def _transe(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """TransE: ``-|h + r - t|_p``. All tails: the distance of ``h + r`` to each tail; all heads: of ``t - r`` to each
    head. Other shapes: PyKEEN's forward. :return: shape: ``batch_dims``"""
    side = _all_candidates(h, r, t)
    if side is None or isinstance(self.p, str):
        return type(self).forward(self, h, r, t)
    if side == "tails":
        return _distances((h + r)[:, 0], t[0], self.p, self.power_norm)
    return _distances((t - r)[:, 0], h[0], self.p, self.power_norm)


def _rotate(self, h: torch.Tensor, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RotatE: ``-|h r - t|_2`` on complex rows, as PyKEEN computes it: all tails, the distance of ``h r`` to each
    tail; all heads, of ``t conj(r)`` to each head (PyKEEN's own choice for that shape). Other shapes: PyKEEN's
    forward. :return: shape: ``batch_dims``"""
    side = _all_candidates(h, r, t)
    if side is None or not (h.is_complex() and r.is_complex() and t.is_complex()):
        return type(self).forward(self, h, r, t)
    if side == "tails":
        return _distances((h * r)[:, 0], t[0], 2, False)
    return _distances((t * torch.conj(r))[:, 0], h[0], 2, False)


#: interaction class name -> its matrix-product (or direct-distance) forward
MATRIX_PRODUCT_FORMS = {
    "DistMultInteraction": _distmult,
    "ComplExInteraction": _complex,
    "ConvEInteraction": _conve,
    "TransEInteraction": _transe,
    "RotatEInteraction": _rotate,
}


def use_matrix_products(model: nn.Module) -> list[str]:
    """Score the model's broadcasting interactions by matrix products, in place.

    :return: the names of the interactions changed (empty when none has such a form)
    """
    changed = []
    for name, module in model.named_modules():
        form = MATRIX_PRODUCT_FORMS.get(type(module).__name__)
        if form is not None and type(module).__module__.startswith("pykeen."):
            module.forward = types.MethodType(form, module)
            changed.append(name or type(module).__name__)
    return changed


@contextlib.contextmanager
def matrix_products(model: nn.Module) -> Iterator[list[str]]:
    """:func:`use_matrix_products` for the length of a ``with`` block; the model's own forward is put back after."""
    before = {
        name: module.__dict__.get("forward")
        for name, module in model.named_modules()
        if type(module).__name__ in MATRIX_PRODUCT_FORMS
    }
    try:
        yield use_matrix_products(model)
    finally:
        for name, module in model.named_modules():
            if name in before:
                if before[name] is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = before[name]
