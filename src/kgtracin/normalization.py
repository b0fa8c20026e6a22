"""How TracIn's inner products are normalised: raw, by the training gradient's norm, or by both norms.

Each normalisation is a component of the streaming scorer (:class:`kgtracin.scoring.Scorer`), which never asks
which one it holds. At one checkpoint with learning rate ``lr``, for a training triple ``z`` and a test triple
``z'`` with gradients ``g = grad l(w, z)`` and ``g' = grad l(w, z')``:

* ``None`` (raw TracIn): ``lr <g, g'>``;
* ``"train"`` (RelatIF-style): ``lr <g, g'> / |g|``, so that large-gradient outliers stop being everyone's
  proponents; self-influence is ``lr <g / |g|, g> = lr |g|``;
* ``"cosine"``: ``lr <g, g'> / (|g| |g'|)``; self-influence is ``lr`` for every triple: defined, but
  uninformative.

Norms are clamped below at ``1e-15`` (squared norms at ``1e-30``), so a zero gradient scores zero.

Each is linear in the test gradient once the test side is scaled, so influence on a sum of test losses can be
taken along one summed (and, for ``cosine``, norm-weighted) test gradient: :attr:`Normalization.test_norms`,
:attr:`Normalization.train_norms` and :meth:`Normalization.summed_values` say how.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at import, so that the configuration can list the names
    import torch

__all__ = ["Normalization", "make_normalization", "NORMALIZATIONS", "norms_of"]

#: the smallest squared norm divided by
_FLOOR = 1e-30


def norms_of(features) -> torch.Tensor:
    """Each gradient's norm, clamped as every normalisation clamps it. :return: shape: (B,)"""
    return features.self_kernel().clamp_min(_FLOOR).sqrt()


class Normalization:
    """Raw TracIn: nothing is divided. The base of the other normalisations."""

    name: str | None = None

    def prepare_tests(self, tests: list) -> None:
        """Called once with the test side's features (one per checkpoint), before any training batch."""

    def pair(self, part: torch.Tensor, train, test) -> torch.Tensor:
        """One checkpoint's block, normalised.

        :param part: shape: (M, B), ``lr <g(train_b), g(test_m)>``
        :param train: the training batch's features (:class:`kgtracin.gradients.Features`)
        :param test: the test side's features
        :return: shape: (M, B)
        """
        return part

    def pair_values(self, part: torch.Tensor, train, test, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """:meth:`pair` for the pairs ``(i_p, j_p)`` only.

        :param part: shape: (P,), ``lr <g(train_i), g(test_j)>``
        :param i: shape: (P,), rows of the training batch
        :param j: shape: (P,), rows of the test side
        :return: shape: (P,)
        """
        return part

    def self_term(self, part: torch.Tensor, lr: float) -> torch.Tensor:
        """One checkpoint's self-influence, normalised.

        :param part: shape: (B,), ``lr |g|^2``
        """
        return part

    #: whether the summed path (:meth:`kgtracin.scoring.Scorer.run_summed`) needs each training gradient's norm
    train_norms = False
    #: whether it weighs each test gradient by the inverse of its norm before summing them
    test_norms = False

    def summed_values(self, part: torch.Tensor, norms: torch.Tensor | None) -> torch.Tensor:
        """One checkpoint's ``lr <g(train_b), G>``, normalised, where ``G`` already holds the test side's weights.

        :param part: shape: (B,)
        :param norms: shape: (B,), ``|g(train_b)|`` clamped, when :attr:`train_norms`
        """
        return part


class TrainNorm(Normalization):
    """Each training gradient divided by its norm at each checkpoint."""

    name = "train"

    def pair(self, part, train, test):
        return part / norms_of(train).unsqueeze(0)

    def pair_values(self, part, train, test, i, j):
        if train.norms is None:  # once per training batch, not per chunk of pairs
            train.norms = norms_of(train)
        return part / train.norms[i]

    def self_term(self, part, lr):
        return part / (part / lr).clamp_min(_FLOOR).sqrt()  # <g / |g|, g> = |g|

    train_norms = True

    def summed_values(self, part, norms):
        return part / norms


class Cosine(TrainNorm):
    """Both gradients divided by their norms: the training side as :class:`TrainNorm`, then the test side."""

    name = "cosine"

    def prepare_tests(self, tests):
        for features in tests:
            features.norms = norms_of(features)

    def pair(self, part, train, test):
        return super().pair(part, train, test) / test.norms.unsqueeze(1)

    def pair_values(self, part, train, test, i, j):
        return super().pair_values(part, train, test, i, j) / test.norms[j]

    def self_term(self, part, lr):
        return part / (part / lr).clamp_min(_FLOOR)  # always lr

    test_norms = True


#: name -> normalisation
NORMALIZATIONS: dict[str | None, type[Normalization]] = {cls.name: cls for cls in (Normalization, TrainNorm, Cosine)}


def make_normalization(name: str | Normalization | None) -> Normalization:
    """The normalisation by name (``None``, ``"train"`` or ``"cosine"``), or the normalisation itself."""
    if isinstance(name, Normalization):
        return name
    return NORMALIZATIONS[name]()
