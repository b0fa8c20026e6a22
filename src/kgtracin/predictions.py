"""The model's own view of a triple: its score, its filtered rank among all tails, and its top tails.

Ranks are *filtered* (every other known true tail of ``(h, r, ?)`` is removed before ranking) and
*realistic* (ties count half), as in PyKEEN's rank-based evaluator. Scores are the pre-sigmoid scores of
``predict_t``, which handles inverse-triple models as PyKEEN does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch

from .scorers import matrix_products

__all__ = [
    "KnownTriples",
    "tail_scores",
    "head_scores",
    "tail_view",
    "head_view",
    "evaluate_model",
    "top_predictions",
    "unseen_notes",
]


class KnownTriples:
    """Every known true triple, for filtering: ``(h, r) -> tails``.

    :param parts: tensors of shape (n, 3), dtype long, dataset ids
    """

    def __init__(self, parts: Iterable[torch.Tensor]):
        tails: dict[tuple[int, int], list[int]] = defaultdict(list)
        heads: dict[tuple[int, int], list[int]] = defaultdict(list)
        for part in parts:
            for h, r, t in part.tolist():
                tails[h, r].append(t)
                heads[r, t].append(h)
        self._tails = {key: torch.tensor(sorted(set(value)), dtype=torch.long) for key, value in tails.items()}
        self._heads = {key: torch.tensor(sorted(set(value)), dtype=torch.long) for key, value in heads.items()}

    def tails(self, head: int, relation: int) -> torch.Tensor:
        """The known tails of ``(head, relation, ?)``. :return: shape: (n,), dtype: long"""
        return self._tails.get((head, relation), torch.empty(0, dtype=torch.long))

    def heads(self, relation: int, tail: int) -> torch.Tensor:
        """The known heads of ``(?, relation, tail)``. :return: shape: (n,), dtype: long"""
        return self._heads.get((relation, tail), torch.empty(0, dtype=torch.long))

    def mask(self, hr: torch.Tensor, num_entities: int, keep: torch.Tensor | None = None) -> torch.Tensor:
        """True where a tail is a known true tail to filter out.

        :param hr: shape: (B, 2), dtype: long
        :param keep: shape: (B,), a tail per row that is *not* filtered (the triple being ranked)
        :return: shape: (B, num_entities), dtype: bool
        """
        out = torch.zeros(hr.shape[0], num_entities, dtype=torch.bool)
        for row, (h, r) in enumerate(hr.tolist()):
            out[row, self.tails(h, r)] = True
        if keep is not None:
            out[torch.arange(hr.shape[0]), keep] = False
        return out


@torch.no_grad()
def _all_scores(model, pairs: torch.Tensor, predict, batch_size: int) -> torch.Tensor:
    model.eval()
    parts = []
    with matrix_products(model):
        for first in range(0, pairs.shape[0], batch_size):
            scores = predict(pairs[first : first + batch_size].to(next(model.parameters()).device))
            parts.append((torch.logit(scores) if model.predict_with_sigmoid else scores).cpu())
    return torch.cat(parts) if parts else torch.empty(0, model.num_entities)


def tail_scores(model, hr: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Pre-sigmoid scores of every tail, as ``predict_t`` gives them.

    :param hr: shape: (B, 2), dtype: long, dataset ids
    :return: shape: (B, num_entities)
    """
    return _all_scores(model, hr, model.predict_t, batch_size)


def head_scores(model, rt: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Pre-sigmoid scores of every head, as ``predict_h`` gives them (an inverse-triple model scores the inverse
    relation's tails, as PyKEEN does).

    :param rt: shape: (B, 2), dtype: long, dataset ids
    :return: shape: (B, num_entities)
    """
    return _all_scores(model, rt, model.predict_h, batch_size)


@torch.no_grad()
def top_predictions(model, anchor: tuple[int, int], n: int, known: KnownTriples, head: bool = False) -> torch.Tensor:
    """The model's ``n`` best completions of ``(h, r, ?)`` (or ``(?, r, t)``), leaving out known triples.

    :param anchor: ``(h, r)`` for tails, ``(r, t)`` for heads (``head=True``), dataset ids
    :param known: the triples to leave out (the facts the model was trained on)
    :return: shape: (n', 3), dtype: long, the predicted triples, best first (n' <= n)
    """
    model.eval()
    if head:
        relation, tail = anchor
        scores = head_scores(model, torch.tensor([[relation, tail]]))[0]
        scores[known.heads(relation, tail)] = float("-inf")
        order = [int(e) for e in torch.argsort(scores, descending=True, stable=True) if scores[e] > float("-inf")]
        return torch.tensor([[e, relation, tail] for e in order[:n]], dtype=torch.long).view(-1, 3)
    h, relation = anchor
    scores = tail_scores(model, torch.tensor([[h, relation]]))[0]
    scores[known.tails(h, relation)] = float("-inf")
    order = [int(e) for e in torch.argsort(scores, descending=True, stable=True) if scores[e] > float("-inf")]
    return torch.tensor([[h, relation, e] for e in order[:n]], dtype=torch.long).view(-1, 3)


def tail_view(model, triples: torch.Tensor, known: KnownTriples) -> tuple[torch.Tensor, torch.Tensor]:
    """Each triple's score and filtered, realistic rank among all tails of ``(h, r, ?)``.

    :param triples: shape: (B, 3), dtype: long, dataset ids
    :return: scores (B,) and ranks (B,), float, rank 1 is best
    """
    scores = tail_scores(model, triples[:, :2])
    scores = scores.masked_fill(known.mask(triples[:, :2], scores.shape[1], keep=triples[:, 2]), float("-inf"))
    return _rank(scores, triples[:, 2])


def head_view(model, triples: torch.Tensor, known: KnownTriples) -> tuple[torch.Tensor, torch.Tensor]:
    """Each triple's head score (``predict_h``) and filtered, realistic rank among all heads of ``(?, r, t)``.

    :param triples: shape: (B, 3), dtype: long, dataset ids
    :return: scores (B,) and ranks (B,), float, rank 1 is best
    """
    scores = head_scores(model, triples[:, 1:])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for row, (r, t) in enumerate(triples[:, 1:].tolist()):
        mask[row, known.heads(r, t)] = True
    mask[torch.arange(triples.shape[0]), triples[:, 0]] = False
    return _rank(scores.masked_fill(mask, float("-inf")), triples[:, 0])


def unseen_notes(triples: torch.Tensor, training: torch.Tensor) -> list[str]:
    """A note per triple whose head or tail never occurs in the training triples (its embedding is untrained).

    :param triples: shape: (B, 3), dtype: long
    :param training: shape: (N, 3), dtype: long
    :return: B strings, empty where both entities occur in training
    """
    seen = set(training[:, 0].tolist()) | set(training[:, 2].tolist())
    notes = []
    for h, _, t in triples.tolist():
        missing = [side for side, entity in (("head", h), ("tail", t)) if entity not in seen]
        notes.append(f"{' and '.join(missing)} never in training (untrained embedding)" if missing else "")
    return notes


def _rank(scores: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    own = scores.gather(1, true.view(-1, 1))
    greater = (scores > own).sum(dim=1)
    ties = (scores == own).sum(dim=1) - 1
    return own.squeeze(1), 1.0 + greater.double() + 0.5 * ties.double()


def evaluate_model(model, triples: torch.Tensor, filter_triples: list[torch.Tensor], batch_size: int = 256) -> dict:
    """Filtered rank-based evaluation with PyKEEN's evaluator (both directions, realistic ranks).

    :param triples: shape: (n, 3), dtype: long, the triples to rank
    :param filter_triples: every known triple (training, validation, testing)
    :return: ``{"mrr": ..., "hits_at_1": ..., "hits_at_3": ..., "hits_at_10": ..., "num_triples": n}``
    """
    from pykeen.evaluation import RankBasedEvaluator

    evaluator = RankBasedEvaluator(filtered=True)
    with matrix_products(model):
        results = evaluator.evaluate(
            model, triples, additional_filter_triples=filter_triples, batch_size=batch_size, use_tqdm=False
        )
    out = {"mrr": float(results.get_metric("both.realistic.inverse_harmonic_mean_rank"))}
    for k in (1, 3, 10):
        out[f"hits_at_{k}"] = float(results.get_metric(f"both.realistic.hits_at_{k}"))
    out["num_triples"] = int(triples.shape[0])
    return out
