"""What a TracIn loss is: one differentiable loss per triple, and what the ``fast`` method may use of it.

A loss is a component. Besides its per-triple value, each loss states the structure that the exact closed form
of :mod:`kgtracin.gradients.fast` exploits, so that the gradient computers never ask which loss they serve:

* :meth:`TripleLoss.fast_unsupported`: why the closed form cannot take this loss on a model (then every selected
  parameter is differentiated per triple with ``torch.func``, exact and slower);
* :meth:`TripleLoss.candidate_tables`: the entity tables whose gradient has a rank-one term per scored
  candidate, beside the rows the query looks up (``docs/mathematics.md``, section 4);
* :meth:`TripleLoss.fast_objective`: the scalar whose backward pass gives every per-triple factor, and, per
  direction, the candidate terms ``delta`` and ``q``;
* :attr:`TripleLoss.scores_all_entities`: whether one triple's loss scores every entity (a 1-N loss), which
  makes batches of a few hundred triples the fastest.

Adding a loss is adding one module to this package, which names its class ``LOSS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["TripleLoss", "Candidates"]

#: per direction: ``delta`` (B, E), ``dl/ds`` over all candidates, and {entity table index: ``q`` (B, D)}
Candidates = list[tuple[torch.Tensor, dict[int, torch.Tensor]]]


class TripleLoss(ABC):
    """One loss per triple, on internal ids, in ``eval()`` mode."""

    #: the name used by ``TracIn(loss=...)`` and ``--loss``
    name: str
    #: whether one triple's loss scores every entity (a 1-N loss)
    scores_all_entities: bool = False
    #: PyKEEN training losses (lower case, without ``_`` or ``-``) whose objective this loss matches
    training_losses: frozenset[str] = frozenset()

    @abstractmethod
    def __call__(self, model, hrt: torch.Tensor) -> torch.Tensor:
        """Per-triple losses.

        :param model: a PyKEEN ``ERModel``
        :param hrt: shape: (B, 3), dtype: long, *internal* ids (relation ``2 r`` with inverse triples)
        :return: shape: (B,)
        """

    def fast_unsupported(self, model) -> str | None:
        """Why the closed form cannot take this loss on ``model``, or None when it can."""
        return None

    def candidate_tables(self, model) -> dict[str, int]:
        """Parameter name -> entity representation index, for every table with candidate terms (none here)."""
        return {}

    def fast_objective(self, model, hrt: torch.Tensor) -> tuple[torch.Tensor, Candidates]:
        """The scalar whose gradient, taken through the fast method's hooks, gives every per-triple factor.

        :param hrt: shape: (B, 3), internal ids
        :return: the scalar (here the summed losses: a sum's gradient splits over its terms), and the
            candidate terms per direction (none here)
        """
        return self(model, hrt).sum(), []

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
