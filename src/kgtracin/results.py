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
    "test_index", "test_head", "test_relation", "test_tail", "kind", "rank",
    "train_index", "train_head", "train_relation", "train_tail", "influence",
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

    def to_frame(self, labels: Labels | None = None,
                 model_view: tuple[torch.Tensor, torch.Tensor] | None = None) -> pd.DataFrame:
        """One row per (test triple, kind, rank), labelled when labels are known, else with ids.

        :param model_view: each test triple's score (M,) and filtered tail rank (M,); adds the columns
            ``test_score`` and ``test_rank`` after ``test_tail``
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
            frames.append(pd.DataFrame({
                "test_index": test_rows,
                "test_head": test[:, 0], "test_relation": test[:, 1], "test_tail": test[:, 2],
                "kind": kind,
                "rank": np.tile(np.arange(1, k + 1), m),
                "train_index": train_rows,
                "train_head": train[:, 0], "train_relation": train[:, 1], "train_tail": train[:, 2],
                "influence": top.scores.reshape(-1).double().numpy(),
            }))
        frame = pd.concat(frames, ignore_index=True)
        order = np.lexsort((frame["rank"].to_numpy(), (frame["kind"] == "opponent").to_numpy(),
                            frame["test_index"].to_numpy()))
        frame = frame.iloc[order].reset_index(drop=True)[list(COLUMNS)]
        if model_view is not None:
            scores, ranks = (np.asarray(x.double().cpu()) for x in model_view)
            at = frame.columns.get_loc("test_tail") + 1
            frame.insert(at, "test_rank", ranks[frame["test_index"].to_numpy()])
            frame.insert(at, "test_score", scores[frame["test_index"].to_numpy()])
        return frame
