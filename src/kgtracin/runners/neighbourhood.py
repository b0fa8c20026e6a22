"""Top-k over each prediction's neighbourhood: the training triples that share an entity with it.

Kelpie (SIGMOD 2022) looks for explanations among the facts that mention the prediction's entities; so does
``candidates="neighbourhood"``. The TracIn scores are the exact ones; only the candidates differ: for a test
triple ``(h, r, t)`` they are the training triples whose head or tail is ``h`` or ``t``. Only those training
triples are ever differentiated, each once per checkpoint, and only the (test, neighbour) pairs' inner products
are formed (:meth:`kgtracin.scoring.Scorer.run_pairs`), so the cost is that of the neighbours' gradients. A test
triple with fewer than k candidates of a sign gets filler entries (index -1, influence -inf among the proponents
and +inf among the opponents), which :meth:`kgtracin.results.InfluenceResult.to_frame` leaves out as it leaves
out every entry of the wrong sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses.softmax import query_order
from ..scoring import Scorer

__all__ = ["neighbourhood_rows", "neighbourhood_pairs", "NeighbourhoodTopK", "neighbourhood_topk"]


def neighbourhood_rows(train: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """The training rows that share an entity with any test triple. :return: shape: (R,), dtype: long, sorted"""
    entities = torch.unique(test[:, [0, 2]])
    return (torch.isin(train[:, 0], entities) | torch.isin(train[:, 2], entities)).nonzero().squeeze(1)


def _ends(triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each triple's distinct end entities: (entity, row) pairs, a self-loop counted once. :return: (Q,), (Q,)"""
    rows = torch.arange(triples.shape[0])
    loop = triples[:, 0] == triples[:, 2]
    return torch.cat([triples[:, 0], triples[~loop, 2]]), torch.cat([rows, rows[~loop]])


def neighbourhood_pairs(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (training row, test row) pair that shares an end entity, each pair once, without an (M x N) mask.

    :param train: shape: (N, 3)
    :param test: shape: (M, 3)
    :return: training rows (P,) and test rows (P,), sorted by training row, then test row
    """
    train_entity, train_row = _ends(train)
    order = torch.argsort(train_entity, stable=True)
    train_entity, train_row = train_entity[order], train_row[order]
    test_entity, test_row = _ends(test)
    lo = torch.searchsorted(train_entity, test_entity, side="left")
    counts = torch.searchsorted(train_entity, test_entity, side="right") - lo
    starts = torch.repeat_interleave(lo - (torch.cumsum(counts, 0) - counts), counts)
    rows = train_row[starts + torch.arange(int(counts.sum()))]
    keys = torch.unique(rows * test.shape[0] + torch.repeat_interleave(test_row, counts))  # sorted, each pair once
    return torch.div(keys, test.shape[0], rounding_mode="floor"), keys % test.shape[0]


def _rank(values: torch.Tensor, rows: torch.Tensor, tests: torch.Tensor, m: int, k: int, largest: bool):
    """Per test row, the k best pair values, ties to the smaller training row; filler entries where fewer.

    :param values: shape: (P,); ``rows``, ``tests``: shape (P,)
    :return: values (m, k) and training rows (m, k)
    """
    order = torch.argsort(rows, stable=True)
    order = order[torch.argsort(values[order], descending=largest, stable=True)]
    order = order[torch.argsort(tests[order], stable=True)]  # by test, then by value, then by training row
    counts = torch.bincount(tests, minlength=m)
    position = torch.arange(order.shape[0]) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    keep = order[position < k]
    out = values.new_full((m, k), float("-inf") if largest else float("inf"))
    index = torch.full((m, k), -1, dtype=torch.long)
    out[tests[keep], position[position < k]] = values[keep]
    index[tests[keep], position[position < k]] = rows[keep]
    return out, index.masked_fill(torch.isinf(out), -1)


@dataclass(frozen=True)
class NeighbourhoodTopK:
    """Per test triple, the k largest and k smallest influences among its own neighbourhood, shape (M, k) each;
    indices are training rows, -1 for a filler."""

    top_values: torch.Tensor
    top_indices: torch.Tensor
    bottom_values: torch.Tensor
    bottom_indices: torch.Tensor


def neighbourhood_topk(scorer: Scorer, train: torch.Tensor, test: torch.Tensor, k: int, dtype) -> NeighbourhoodTopK:
    """Top-k proponents and opponents of each test triple among the training triples that share an entity with it.

    :param train: shape: (N, 3), all training triples
    :param test: shape: (M, 3)
    :return: ``top_values``/``top_indices``/``bottom_values``/``bottom_indices`` (M, k); indices are rows of
        ``train``
    """
    rows, tests = neighbourhood_pairs(train, test)
    candidates, local = torch.unique(rows, return_inverse=True)  # the neighbours, in training order
    values = torch.zeros(0, dtype=dtype)
    if rows.numel():
        # neighbours that share a query go into the same batches (the 1-N loss scores each query once)
        order = query_order(train[candidates])
        position = torch.empty_like(order)
        position[order] = torch.arange(order.shape[0])
        local = position[local]
        by_neighbour = torch.argsort(local, stable=True)  # run_pairs takes the pairs sorted by neighbour
        values = torch.empty(rows.shape[0], dtype=dtype)
        values[by_neighbour] = scorer.run_pairs(
            train[candidates[order]], test, local[by_neighbour], tests[by_neighbour]
        ).to("cpu", dtype)
    m = test.shape[0]
    top = _rank(values, rows, tests, m, k, True)
    bottom = _rank(values, rows, tests, m, k, False)
    return NeighbourhoodTopK(*top, *bottom)
