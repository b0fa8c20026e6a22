"""A cheap check of explanations: a few training steps from the final model, with and without them.

Kelpie checks its candidate explanations by post-training before it trusts them. Here the check copies the final
model and takes ``steps`` Adam steps (the run's learning rate) on the ``softmax`` loss of the predictions'
neighbourhoods (the training triples that share an entity with a prediction), twice: once without the
explanations and once with them. Each prediction's filtered tail rank after both says how much its explanation
still holds it up once the model may move: a prediction that falls without its explanation and not with it
needed the explanation. Like the end-to-end protocol, whose outcome it tries to predict, it removes the union of
the explanations at once; it costs ``2 x steps`` passes over the neighbourhoods (a few seconds for a hundred
predictions on the WordNet graph) against one whole retraining.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..compat import to_internal
from ..losses import SoftmaxLoss
from ..predictions import KnownTriples, _rank, tail_scores
from ..runners.neighbourhood import neighbourhood_rows
from ..scorers import matrix_products

__all__ = ["CheckConfig", "check_explanations"]


@dataclass(frozen=True)
class CheckConfig:
    """How explanations are checked."""

    steps: int = 10
    learning_rate: float = 0.01
    #: training triples per chunk of a step (the step's gradient is summed over chunks)
    chunk: int = 256


def _ranks(model, targets: torch.Tensor, known: KnownTriples) -> list[float]:
    scores = tail_scores(model, targets[:, :2])
    mask = known.mask(targets[:, :2], scores.shape[1], keep=targets[:, 2])
    return _rank(scores.masked_fill(mask, float("-inf")), targets[:, 2])[1].tolist()


def _post_train(model, rows: torch.Tensor, config: CheckConfig):
    """A copy of ``model`` after ``config.steps`` full-batch Adam steps on the mean softmax loss of ``rows``."""
    model = copy.deepcopy(model).eval()
    if rows.numel() == 0:
        return model
    internal = to_internal(model, rows)
    loss_fn = SoftmaxLoss()
    optimizer = torch.optim.Adam(model.get_grad_params(), lr=config.learning_rate)
    with torch.enable_grad(), matrix_products(model):  # all-entity scores as one product
        for _ in range(config.steps):
            optimizer.zero_grad(set_to_none=True)
            for part in internal.split(config.chunk):
                (loss_fn(model, part).sum() / internal.shape[0]).backward()
            optimizer.step()
    return model.eval()


def check_explanations(
    model,
    train: torch.Tensor,
    targets: torch.Tensor,
    explanations: list[list[int]],
    known: KnownTriples,
    config: CheckConfig,
) -> list[dict]:
    """Each prediction's filtered tail rank after a few steps on the neighbourhoods, without and with the
    explanations.

    :param model: the final model (not changed)
    :param train: shape: (N, 3), the training triples
    :param targets: shape: (T, 3), the predictions
    :param explanations: per prediction, rows of ``train``
    :return: per prediction ``{"rank_without": ..., "rank_with": ...}``
    """
    near = neighbourhood_rows(train, targets)
    removed = torch.as_tensor(sorted({row for rows in explanations for row in rows}), dtype=torch.long)
    keep = near[~torch.isin(near, removed)]
    without = _ranks(_post_train(model, train[keep], config), targets, known)
    kept = _ranks(_post_train(model, train[near], config), targets, known)
    return [{"rank_without": a, "rank_with": b} for a, b in zip(without, kept)]
