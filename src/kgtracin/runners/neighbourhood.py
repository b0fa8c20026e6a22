"""Top-k over each prediction's neighbourhood: the training triples that share an entity with it.

Kelpie (SIGMOD 2022) looks for explanations among the facts that mention the prediction's entities; so does
``candidates="neighbourhood"``. The TracIn scores are the exact ones; only the candidates differ: for a test
triple ``(h, r, t)`` they are the training triples whose head or tail is ``h`` or ``t``. Only those training
triples are ever differentiated, so a few hundred predictions cost a small part of one pass over the training
set. A test triple with fewer than k candidates of a sign gets filler entries (index -1, influence -inf among
the proponents and +inf among the opponents), which :meth:`kgtracin.results.InfluenceResult.to_frame` leaves
out as it leaves out every entry of the wrong sign.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..scoring import Scorer, select_top

__all__ = ["neighbourhood_rows", "touches", "NeighbourhoodSink", "neighbourhood_topk"]


def touches(test: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Whether each training triple shares an entity (head or tail) with each test triple's head or tail.

    :param test: shape: (M, 3)
    :param train: shape: (B, 3)
    :return: shape: (M, B), dtype: bool
    """
    ends = test[:, [0, 2]].unsqueeze(2)  # (M, 2, 1)
    return ((ends == train[:, 0]) | (ends == train[:, 2])).any(dim=1)


def neighbourhood_rows(train: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """The training rows that share an entity with any test triple. :return: shape: (R,), dtype: long, sorted"""
    entities = torch.unique(test[:, [0, 2]])
    return (torch.isin(train[:, 0], entities) | torch.isin(train[:, 2], entities)).nonzero().squeeze(1)


@dataclass
class NeighbourhoodSink:
    """Keeps, per test triple, the k largest and k smallest influences among its own neighbourhood.

    :param test: shape: (M, 3)
    :param train: shape: (R, 3), the candidate training triples, in the order the scorer sees them
    :param rows: shape: (R,), their rows in the full training set
    """

    test: torch.Tensor
    train: torch.Tensor
    rows: torch.Tensor
    k: int
    dtype: torch.dtype

    def __post_init__(self) -> None:
        m = self.test.shape[0]
        empty = torch.empty(m, 0, dtype=self.dtype), torch.empty(m, 0, dtype=torch.long)
        self.top, self.bottom = empty, empty

    def add(self, start: int, block: torch.Tensor) -> None:
        """:param block: shape: (M, B), scores of candidates ``start .. start + B``"""
        block = block.to("cpu", self.dtype)
        width = block.shape[1]
        allowed = touches(self.test, self.train[start : start + width])
        columns = self.rows[start : start + width].expand(block.shape[0], -1)
        for largest in (True, False):
            held = self.top if largest else self.bottom
            values = block.masked_fill(~allowed, float("-inf") if largest else float("inf"))
            merged = select_top(torch.cat([held[0], values], 1), torch.cat([held[1], columns], 1), self.k, largest)
            if largest:
                self.top = merged
            else:
                self.bottom = merged

    def _final(self, held: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        values, indices = held
        missing = self.k - values.shape[1]
        if missing > 0:  # fewer candidates than k in all: filler entries
            fill = float("-inf") if held is self.top else float("inf")
            values = torch.cat([values, values.new_full((values.shape[0], missing), fill)], 1)
            indices = torch.cat([indices, indices.new_full((indices.shape[0], missing), -1)], 1)
        return values, indices.masked_fill(torch.isinf(values), -1)

    @property
    def top_values(self) -> torch.Tensor:
        return self._final(self.top)[0]

    @property
    def top_indices(self) -> torch.Tensor:
        return self._final(self.top)[1]

    @property
    def bottom_values(self) -> torch.Tensor:
        return self._final(self.bottom)[0]

    @property
    def bottom_indices(self) -> torch.Tensor:
        return self._final(self.bottom)[1]


def neighbourhood_topk(scorer: Scorer, train: torch.Tensor, test: torch.Tensor, k: int, dtype) -> NeighbourhoodSink:
    """Top-k proponents and opponents of each test triple among the training triples that share an entity with it.

    :param train: shape: (N, 3), all training triples
    :param test: shape: (M, 3)
    :return: a sink with ``top_values``/``top_indices``/``bottom_values``/``bottom_indices`` (M, k); indices are
        rows of ``train``
    """
    rows = neighbourhood_rows(train, test)
    sink = NeighbourhoodSink(test, train[rows], rows, k, dtype)
    if rows.numel():
        scorer.run_range(train[rows], scorer.prepare(test), sink, desc="neighbourhood")
    return sink
