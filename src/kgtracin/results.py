"""Results of TracIn: top-k proponents and opponents, and their labelled table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .triples import Labels

__all__ = ["TopK", "InfluenceResult", "COLUMNS"]

#: The columns of :meth:`InfluenceResult.to_frame`, in order.
COLUMNS = (
    "test_index",
    "test_head",
    "test_relation",
    "test_tail",
    "kind",
    "rank",
    "train_index",
    "train_head",
    "train_relation",
    "train_tail",
    "influence",
)


@dataclass(frozen=True)
class TopK:
    """The k training triples per test triple, best first.

    :param indices: shape: (M, k), dtype: long; rows of the training triples
    :param scores: shape: (M, k), float; their TracIn influence
    """

    indices: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class InfluenceResult:
    """Top-k proponents (most positive first) and opponents (most negative first) of each test triple.

    :param proponents: the k largest influences per test triple
    :param opponents: the k smallest influences per test triple
    :param test_triples: shape: (M, 3), dtype: long, dataset ids
    :param training_triples: shape: (N, 3), dtype: long, dataset ids
    :param labels: entity and relation labels, when known
    """

    proponents: TopK
    opponents: TopK
    test_triples: torch.Tensor
    training_triples: torch.Tensor
    labels: Labels | None = None

    def to_frame(
        self,
        labels: Labels | None = None,
        model_view: tuple[torch.Tensor, torch.Tensor] | None = None,
        notes: list[str] | None = None,
        rank_of: str = "tail",
    ) -> pd.DataFrame:
        """One row per (test triple, kind, rank), labelled when labels are known, else with ids.

        A proponent has a positive influence and an opponent a negative one: entries of the top k that do not
        (when fewer than k training triples have an influence of that sign, e.g. k close to N) are left out.

        :param model_view: each test triple's score (M,) and filtered rank (M,); adds the columns
            ``test_score`` and ``test_rank`` (``test_head_rank`` with ``rank_of="head"``) after ``test_tail``.
            The rank is a whole number unless tied scores make it a half
        :param notes: a note per test triple (M,), e.g. an entity never seen in training; adds ``test_note``
        :param rank_of: ``tail`` or ``head``: which side the model view's rank ranks
        :return: a DataFrame with the columns :data:`COLUMNS`; ``kind`` is ``proponent`` or ``opponent`` and
            ``rank`` starts at 1
        """
        labels = labels or self.labels
        frames = []
        for kind, top in (("proponent", self.proponents), ("opponent", self.opponents)):
            m, k = top.indices.shape
            test_rows = np.repeat(np.arange(m), k)
            train_rows = top.indices.reshape(-1).numpy()
            test = self.test_triples[test_rows]
            train = self.training_triples[train_rows]
            if labels is not None:
                test, train = labels.to_labels(test), labels.to_labels(train)
            else:
                test, train = test.numpy(), train.numpy()
            influence = top.scores.reshape(-1).double().numpy()
            frame = pd.DataFrame(
                {
                    "test_index": test_rows,
                    "test_head": test[:, 0],
                    "test_relation": test[:, 1],
                    "test_tail": test[:, 2],
                    "kind": kind,
                    "rank": np.tile(np.arange(1, k + 1), m),
                    "train_index": train_rows,
                    "train_head": train[:, 0],
                    "train_relation": train[:, 1],
                    "train_tail": train[:, 2],
                    "influence": influence,
                }
            )
            frames.append(frame[influence > 0] if kind == "proponent" else frame[influence < 0])
        frame = pd.concat(frames, ignore_index=True)
        order = np.lexsort(
            (frame["rank"].to_numpy(), (frame["kind"] == "opponent").to_numpy(), frame["test_index"].to_numpy())
        )
        frame = frame.iloc[order].reset_index(drop=True)[list(COLUMNS)]
        at = frame.columns.get_loc("test_tail") + 1
        if notes is not None:
            frame.insert(at, "test_note", np.asarray(notes, dtype=object)[frame["test_index"].to_numpy()])
        if model_view is not None:
            scores, ranks = (np.asarray(x.double().cpu()) for x in model_view)
            if np.all(ranks == np.round(ranks)):
                ranks = ranks.astype(np.int64)
            name = "test_rank" if rank_of == "tail" else "test_head_rank"
            frame.insert(at, name, ranks[frame["test_index"].to_numpy()])
            frame.insert(at, "test_score", scores[frame["test_index"].to_numpy()])
        return frame
