"""The adapter for PyKEEN ``ERModel``: per-triple scores and losses on dataset ids, parameter selection."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn

from ..compat import cache_holders, clear_caches, prepare, to_internal
from ..errors import KGTracinError
from ..losses import TripleLoss, make_loss

__all__ = ["ModelAdapter", "select_parameters"]


def select_parameters(model: nn.Module, parameters: str | Sequence[str] = "all") -> dict[str, nn.Parameter]:
    """Pick the trainable parameters that TracIn differentiates, in ``named_parameters()`` order.

    :param model: the model
    :param parameters: ``"all"``, or names / glob patterns (``fnmatch``) over ``model.named_parameters()``
    :return: name -> parameter
    :raises KGTracinError: when a pattern matches no trainable parameter
    """
    named = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if isinstance(parameters, str):
        if parameters == "all":
            if not named:
                raise KGTracinError("the model has no trainable parameters")
            return named
        parameters = (parameters,)
    chosen: set[str] = set()
    for pattern in parameters:
        hits = [name for name in named if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise KGTracinError(
                f"parameter pattern {pattern!r} matches no trainable parameter; "
                f"names look like {', '.join(list(named)[:4])}"
            )
        chosen.update(hits)
    return {name: p for name, p in named.items() if name in chosen}


class _TripleLosses(nn.Module):
    """Wraps a model so that ``forward`` is the per-triple loss on *internal* ids (for ``functional_call``)."""

    def __init__(self, model: nn.Module, loss: TripleLoss):
        super().__init__()
        self.model = model
        self.loss = loss
        self.caches = cache_holders(model)  # found once: forward runs for every batch (or triple)

    def forward(self, hrt: torch.Tensor) -> torch.Tensor:
        clear_caches(self.caches)  # every loss from the weights, through any message passing
        try:
            return self.loss(self.model, hrt)
        finally:
            clear_caches(self.caches)


class ModelAdapter:
    """A PyKEEN ``ERModel`` seen as a per-triple loss over a chosen set of parameters.

    Triples given to the adapter hold *dataset* ids, as in ``TriplesFactory.mapped_triples``. Models trained
    with inverse triples use internal relation id ``2 r`` for dataset relation ``r``; the adapter maps them as
    PyKEEN's ``predict_hrt`` does. The model is put in ``eval()`` mode: gradients are taken without dropout
    and with batch-norm running statistics.
    """

    def __init__(self, model: nn.Module, parameters: str | Sequence[str] = "all", loss: str | TripleLoss = "bce"):
        from pykeen.models import ERModel

        if not isinstance(model, ERModel):
            raise KGTracinError(f"kgtracin needs a PyKEEN ERModel, got {type(model).__name__}")
        self.model = prepare(model).eval()
        self.parameters = select_parameters(model, parameters)
        self.loss = make_loss(loss)
        self.scorer = _TripleLosses(model, self.loss)
        self._caches = self.scorer.caches  # kept here: ``scorer`` may be replaced by its compiled version

    def freeze_unselected(self) -> ModelAdapter:
        """Stop autograd from tracking the parameters that are not differentiated.

        Only for a model the adapter owns (kgtracin's private copy of a checkpoint): it saves the forward
        pass the bookkeeping for gradients nobody asks for.
        """
        for param in self.model.parameters():
            if not any(param is chosen for chosen in self.parameters.values()):
                param.requires_grad_(False)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.parameters.values())).dtype

    @property
    def num_entities(self) -> int:
        return self.model.num_entities

    @property
    def num_relations(self) -> int:
        """Number of *dataset* relations (without inverses)."""
        n = self.model.num_relations
        return n // 2 if self.model.use_inverse_triples else n

    def check_triples(self, hrt: torch.Tensor, what: str = "triples") -> torch.Tensor:
        """Validate a (n, 3) long tensor of dataset ids and return it on CPU.

        :raises KGTracinError: on a wrong shape, dtype, or an id out of range
        """
        if not isinstance(hrt, torch.Tensor):
            raise KGTracinError(f"{what} must be a LongTensor of shape (n, 3), got {type(hrt).__name__}")
        if hrt.dtype not in (torch.int64, torch.int32) or hrt.ndim != 2 or hrt.shape[1] != 3:
            raise KGTracinError(f"{what} must be a LongTensor of shape (n, 3), got {hrt.dtype} {tuple(hrt.shape)}")
        if hrt.shape[0] == 0:
            raise KGTracinError(f"{what} is empty")
        hrt = hrt.long().cpu()
        for column, name, limit in (
            (0, "head", self.num_entities),
            (2, "tail", self.num_entities),
            (1, "relation", self.num_relations),
        ):
            values = hrt[:, column]
            bad = (values < 0) | (values >= limit)
            if bad.any():
                row = int(bad.nonzero()[0, 0])
                raise KGTracinError(f"{what}: {name} id {int(values[row])} in row {row} is out of range [0, {limit})")
        return hrt

    def to_internal(self, hrt: torch.Tensor) -> torch.Tensor:
        """Map dataset ids to the model's internal ids (relation ``r`` -> ``2 r`` with inverse triples).

        :param hrt: shape: (B, 3), dtype: long, dataset ids
        :return: shape: (B, 3), dtype: long, internal ids on the model's device
        """
        return to_internal(self.model, hrt.to(self.device))

    def losses(self, hrt: torch.Tensor) -> torch.Tensor:
        """Per-triple TracIn losses (the adapter's ``loss``: ``bce`` or ``softmax``).

        :param hrt: shape: (B, 3), dtype: long, dataset ids
        :return: shape: (B,)
        """
        return self.scorer(self.to_internal(hrt))

    def fast_objective(self, hrt: torch.Tensor):
        """The loss's objective for the ``fast`` method (:meth:`kgtracin.losses.base.TripleLoss.fast_objective`),
        computed from the weights through any message passing (caches cleared before and after).

        :param hrt: shape: (B, 3), dtype: long, dataset ids
        :return: the scalar to differentiate, and the candidate terms per direction
        """
        clear_caches(self._caches)
        try:
            return self.loss.fast_objective(self.model, self.to_internal(hrt))
        finally:
            clear_caches(self._caches)
