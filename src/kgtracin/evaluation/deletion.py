"""Deletion faithfulness: delete a prediction's top-k proponents, retrain, and see whether it falls.

For each target (a test triple the model ranks first among the filtered tails) and each *arm* (a way to
choose k training triples), the chosen triples are deleted and the model retrained. Two outcomes:

* **PD**: the target's probability ``softmax_t' s(h, r, t')[t]`` dropped;
* **TC**: the model's filtered top-1 tail for ``(h, r, ?)`` changed.

The arms are TracIn variants (a loss and a normalisation) and two baselines: **NH-k**, k random training
triples that share an entity with the target, and **RG-k**, k random training triples that share none
(with isolated retraining this one measures nothing but the deletion itself; with reshuffled retraining it
measures the retraining noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..predictions import KnownTriples, tail_scores

__all__ = ["TracInArm", "TargetView", "target_view", "choose_targets", "neighbour_rows", "far_rows", "deletion_outcome"]


@dataclass(frozen=True)
class TracInArm:
    """A TracIn explanation variant: the loss and the normalisation."""

    loss: str
    normalize: str | None

    @property
    def name(self) -> str:
        return f"TracIn {self.loss}" + ("" if self.normalize is None else f", {self.normalize}-normalised")


@dataclass(frozen=True)
class TargetView:
    """What the model says about targets: probability of the target tail and the filtered top-1.

    :param probability: shape: (T,)
    :param top1: shape: (T,), dtype: long
    """

    probability: torch.Tensor
    top1: torch.Tensor


def target_view(model, targets: torch.Tensor, known: KnownTriples) -> TargetView:
    """:param targets: shape: (T, 3), dtype: long"""
    scores = tail_scores(model, targets[:, :2])
    probability = torch.softmax(scores, dim=1).gather(1, targets[:, 2:3]).squeeze(1)
    filtered = scores.masked_fill(known.mask(targets[:, :2], scores.shape[1], keep=targets[:, 2]), float("-inf"))
    return TargetView(probability, filtered.argmax(dim=1))


def choose_targets(model, candidates: torch.Tensor, known: KnownTriples, count: int, seed: int) -> torch.Tensor:
    """Up to ``count`` candidate triples whose tail the model ranks first (filtered), in a seeded order.

    :param candidates: shape: (n, 3), e.g. the test split
    :return: shape: (T, 3)
    """
    view = target_view(model, candidates, known)
    hits = candidates[view.top1 == candidates[:, 2]]
    order = torch.randperm(hits.shape[0], generator=torch.Generator().manual_seed(seed))
    return hits[order[:count]]


def neighbour_rows(train: torch.Tensor, target: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k random training rows sharing an entity with the target (NH-k). :return: shape: (<=k,)"""
    entities = target[[0, 2]]
    near = torch.isin(train[:, 0], entities) | torch.isin(train[:, 2], entities)
    rows = near.nonzero().squeeze(1)
    return rows[torch.randperm(rows.shape[0], generator=generator)[:k]]


def far_rows(train: torch.Tensor, target: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k random training rows sharing no entity with the target (RG-k). :return: shape: (<=k,)"""
    entities = target[[0, 2]]
    far = ~(torch.isin(train[:, 0], entities) | torch.isin(train[:, 2], entities))
    rows = far.nonzero().squeeze(1)
    return rows[torch.randperm(rows.shape[0], generator=generator)[:k]]


def deletion_outcome(
    retrain: Callable[[torch.Tensor], torch.nn.Module],
    target: torch.Tensor,
    rows: torch.Tensor,
    before: TargetView,
    index: int,
    known: KnownTriples,
) -> tuple[bool, bool]:
    """Delete ``rows``, retrain, and compare the target with ``before``.

    :param retrain: rows to delete -> the retrained model
    :param index: the target's position in ``before``
    :return: (PD: probability dropped, TC: filtered top-1 changed)
    """
    after = target_view(retrain(rows), target.unsqueeze(0), known)
    return (bool(after.probability[0] < before.probability[index]), bool(after.top1[0] != before.top1[index]))
