"""What the report shows for one explained triple: the model's view and the influential training triples."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..predictions import KnownTriples, tail_scores, tail_view
from ..results import InfluenceResult
from ..triples import Labels
from .graph import Edge

__all__ = ["TripleView", "triple_views"]


@dataclass(frozen=True)
class TripleView:
    """One explained triple.

    :param triple: (head, relation, tail) labels
    :param score: the model's pre-sigmoid score
    :param rank: its filtered, realistic rank among all tails of (head, relation, ?)
    :param top_tails: the model's best tails: columns rank, tail, score, note (``explained``, ``training fact``)
    :param influences: columns kind, rank, head, relation, tail, influence
    """

    triple: tuple[str, str, str]
    score: float
    rank: float
    top_tails: pd.DataFrame
    influences: pd.DataFrame

    def edges(self) -> list[Edge]:
        """The test triple, then its proponents and opponents, for the subgraph."""
        h, r, t = self.triple
        return [Edge(h, r, t, "test")] + [
            Edge(row.head, row.relation, row.tail, row.kind, float(row.influence))
            for row in self.influences.itertuples()
        ]


def _top_tails(model, test: torch.Tensor, labels: Labels, training: KnownTriples, n: int) -> list[pd.DataFrame]:
    scores = tail_scores(model, test[:, :2])
    frames = []
    for row, (h, r, t) in enumerate(test.tolist()):
        order = torch.argsort(scores[row], descending=True, stable=True)[:n].tolist()
        known = set(training.tails(h, r).tolist())
        frames.append(
            pd.DataFrame(
                {
                    "rank": range(1, len(order) + 1),
                    "tail": [labels.entities[e] for e in order],
                    "score": [float(scores[row, e]) for e in order],
                    "note": ["explained" if e == t else "training fact" if e in known else "" for e in order],
                }
            )
        )
    return frames


def triple_views(
    model, result: InfluenceResult, labels: Labels, known: KnownTriples, training: KnownTriples, top_tails: int = 5
) -> list[TripleView]:
    """One :class:`TripleView` per test triple of ``result``.

    :param known: every known triple, for filtered ranks
    :param training: the training triples, to mark known facts among the top tails
    """
    test = result.test_triples
    scores, ranks = tail_view(model, test, known)
    frame = result.to_frame(labels)
    tails = _top_tails(model, test, labels, training, top_tails)
    views = []
    for index, triple in enumerate(labels.to_labels(test)):
        rows = frame[frame["test_index"] == index]
        influences = pd.DataFrame(
            {
                "kind": rows["kind"],
                "rank": rows["rank"],
                "head": rows["train_head"],
                "relation": rows["train_relation"],
                "tail": rows["train_tail"],
                "influence": rows["influence"],
            }
        ).reset_index(drop=True)
        views.append(
            TripleView(
                tuple(str(x) for x in triple), float(scores[index]), float(ranks[index]), tails[index], influences
            )
        )
    return views
