"""Ranking training triples by how suspicious they are: candidates for noisy or wrong facts.

Each detector gives every training triple a number, higher meaning more suspicious:

* ``memorization``: ``TracIn(z -> z) / |sum_i TracIn(z_i -> z)|`` over all training triples ``z_i`` (z included):
  the share of z's first-order loss change over training that z's own steps account for. A fact the rest of the
  graph supports is learned from the others; a fake one is learned only by fitting it;
* ``validation_cosine``: ``-sum_j sum_c lr_c cos(g_c(z), g_c(z'_j))`` over the validation triples z'_j:
  training on z pushed the validation loss *up*, whatever the size of z's gradient;
* ``validation``: the same with raw inner products, ``-sum_j TracIn(z -> z'_j)``;
* ``self_influence``: ``TracIn(z -> z)``, the size of z's gradients over training;
* ``support``: ``-log n(h, r) - log n(r, t)``, with ``n(h, r)`` the training triples (z included) of z's head and
  relation and ``n(r, t)`` those of its relation and tail: few other facts ask z's query. No model, no TracIn: the
  graph's own baseline. A fake made by replacing a real triple's head, relation or tail mostly asks a query no
  other fact asks;
* ``consistency``: how ill z fits what else the graph says of its entities and of their pair, no model
  (:mod:`kgtracin.consistency`): an entity in a role its other roles rarely come with, a pair linked by two
  relations that rarely link one pair;
* ``loss``: the final model's loss of z alone, the baseline every detector must beat.

Two more detectors retrain instead of tracing, so they live above this layer and are computed only when asked for
(``kgtracin audit --order-by held_out``, ``--order-by learned`` or ``--folds K``): ``held_out``
(:mod:`kgtracin.evaluation.held_out`), z's log ranks under the run's recipe retrained without a random fold of the
training triples that holds z, standardised among the training triples of z's relation. It measures the
leave-one-out judgement that self-influence and ``memorization`` estimate. ``learned``
(:mod:`kgtracin.evaluation.learned`) weighs it with the graph's own cues by a classifier learned from fakes planted
in the run.

TracIn is linear in the test gradient, so a validation detector is the column sum of the (validation x
training) TracIn matrix, and ``memorization``'s denominator that of the (training x training) one. Both are taken
along one summed gradient per checkpoint (:meth:`kgtracin.TracIn.total_influence`): a few passes over the
training triples, whatever the number of validation or training triples. No TracIn matrix is formed.
"""

from __future__ import annotations

import copy
import logging

import pandas as pd
import torch

from .adapters import ModelAdapter
from .config import AUDIT_LOSS, DETECTORS
from .consistency import consistency_scores
from .errors import KGTracinError

__all__ = [
    "DETECTORS",
    "DEFAULT_DETECTOR",
    "AUDIT_LOSS",
    "detector_scores",
    "audit_frame",
    "detectors_for",
    "self_influence_frame",
    "support_scores",
]

logger = logging.getLogger(__name__)

#: The detector whose order the audit's rows follow when none is chosen from the run (AUDIT_LOSS, in config, is the
#: TracIn loss the audit uses unless told otherwise). By the field's protocol (``benchmarks/noisy_facts.py``;
#: docs/quality/umls-noisy-field-protocol.md and wordnet-noisy-field-protocol.md), ``memorization`` under ``bce`` was
#: the only detector above chance (ROC AUC) on all four of UMLS and the WordNet graph with DistMult and ConvE, with the
#: best mean and worst case; it leads in two of the four (self-influence leads on WordNet ConvE, ``validation_cosine``
#: on UMLS DistMult). The former default (``validation``) was below chance on the WordNet graph. It needs no validation
#: triples, so the audit orders by it with or without them. The model-free ``support`` finds the field's fakes on UMLS
#: better than every TracIn detector, but only because they rarely fit their relation: with plausible fakes
#: (:func:`~kgtracin.evaluation.noisy.corrupt_plausible`) it finds almost none at the top of its order. There
#: ``memorization`` has the best ROC AUC on UMLS DistMult, but it is fourth on UMLS ConvE (``self_influence`` leads at
#: the top) and the plain ``loss`` beats every detector on the WordNet graph. It is the only detector above chance in
#: all seven settings measured (docs/quality/). ``kgtracin audit`` orders a run made by ``kgtracin train`` by the
#: detector chosen from it (:func:`kgtracin.evaluation.calibration.calibrate`), and other runs by this one.
DEFAULT_DETECTOR = "memorization"
#: a total influence smaller than this counts as this (no division by zero)
_TINY = 1e-30


def detectors_for(has_validation: bool) -> tuple[tuple[str, ...], str]:
    """The detectors an audit runs, and the one its rows are ordered by (the default either way): all of them
    with validation triples; without, those that need none (``memorization``, ``self_influence``, ``support``,
    ``consistency``, ``loss``)."""
    if has_validation:
        return DETECTORS, DEFAULT_DETECTOR
    return tuple(d for d in DETECTORS if not d.startswith("validation")), DEFAULT_DETECTOR


def self_influence_frame(values: torch.Tensor, training_triples: torch.Tensor, labels, top_k: int | None = None):
    """Training triples by self-influence, highest first (ties to the smaller index): a ``pandas.DataFrame`` with
    ``rank, head, relation, tail, train_index, self_influence``.

    :param values: shape: (N,), one self-influence per training triple
    :param training_triples: shape: (N, 3), dataset ids
    :param top_k: only the first ``top_k`` rows (default: all)
    """
    import pandas as pd

    order = torch.argsort(values, descending=True, stable=True)
    if top_k is not None:
        order = order[:top_k]
    labeled = labels.to_labels(training_triples[order])
    return pd.DataFrame(
        {
            "rank": range(1, len(order) + 1),
            "head": labeled[:, 0],
            "relation": labeled[:, 1],
            "tail": labeled[:, 2],
            "train_index": order.numpy(),
            "self_influence": values[order].double().numpy(),
        }
    )


def support_scores(training_triples: torch.Tensor) -> torch.Tensor:
    """``-log n(h, r) - log n(r, t)`` per training triple, counted over ``training_triples`` (the triple included).

    :param training_triples: shape: (N, 3), dtype: long
    :return: shape: (N,), float64, at most 0 (0: no other triple shares the head and relation, nor the relation and
        tail)
    """
    out = torch.zeros(training_triples.shape[0], dtype=torch.float64)
    for columns in ((0, 1), (1, 2)):
        _, inverse, counts = torch.unique(
            training_triples[:, list(columns)], dim=0, return_inverse=True, return_counts=True
        )
        out -= counts[inverse].double().log()
    return out


@torch.no_grad()
def plain_losses(model, triples: torch.Tensor, loss: str, batch_size: int = 1024) -> torch.Tensor:
    """The final model's loss of each triple alone. :return: shape: (N,)"""
    adapter = ModelAdapter(copy.deepcopy(model), loss=loss)  # a private copy: the caller's model is left as it is
    return torch.cat(
        [adapter.losses(triples[i : i + batch_size]).detach().cpu() for i in range(0, triples.shape[0], batch_size)]
    )


def detector_scores(
    model,
    training_triples: torch.Tensor,
    validation: torch.Tensor | None,
    checkpoints,
    detectors: tuple[str, ...] = DETECTORS,
    **tracin_kwargs,
) -> dict[str, torch.Tensor]:
    """Every detector's score for every training triple.

    :param model: the final model (for the ``loss`` baseline) and the architecture of the checkpoints
    :param training_triples: shape: (N, 3), dtype: long
    :param validation: shape: (V, 3), dtype: long; needed by the ``validation*`` detectors
    :param checkpoints: ``Checkpoint`` list
    :param tracin_kwargs: passed to :class:`~kgtracin.TracIn` (``loss``, ``method``, ``parameters``, ...)
    :return: detector name -> shape (N,), higher is more suspicious (only the detectors asked for)
    """
    from .tracin import TracIn

    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown:
        raise KGTracinError(f"unknown detector {unknown[0]!r}; choose from {', '.join(DETECTORS)}")
    if validation is None and any(d.startswith("validation") for d in detectors):
        raise KGTracinError(
            "the validation detectors need validation triples; the run has none "
            "(train with --validation FILE, or use a --dataset)"
        )
    if "normalize" in tracin_kwargs:
        raise KGTracinError(
            "the audit's detectors set their own normalisation (validation_cosine: cosine, the "
            "others: none); do not pass normalize"
        )
    out = {}
    raw = TracIn(model, training_triples, checkpoints, normalize=None, **tracin_kwargs)
    first = ("memorization", "self_influence")  # their self-influence pass leaves the norms validation_cosine needs
    for name in sorted(detectors, key=lambda d: d not in first):
        if name == "loss":
            out[name] = plain_losses(model, training_triples, tracin_kwargs.get("loss", "bce"))
            continue
        if name == "support":
            out[name] = support_scores(training_triples)
            continue
        if name == "consistency":
            out[name] = consistency_scores(training_triples)
            continue
        tracin = raw
        if name == "validation_cosine":
            tracin = TracIn(model, training_triples, checkpoints, normalize="cosine", **tracin_kwargs)
            tracin.share_gradient_norms(raw)  # the training norms of a self-influence pass already run, if any
        if name == "memorization":
            if "self_influence" not in out:  # shared with that detector: computed once
                out["self_influence"] = tracin.self_influence()
            total = tracin.total_influence(training_triples).abs().clamp_min(_TINY)
            out[name] = out["self_influence"] / total
        elif name == "self_influence":
            out.setdefault(name, tracin.self_influence())
        else:
            out[name] = -tracin.total_influence(validation)
    return {name: out[name].double() for name in detectors}


def audit_frame(
    scores: dict[str, torch.Tensor],
    training_triples: torch.Tensor,
    labels=None,
    order_by: str = DEFAULT_DETECTOR,
    top_k: int | None = None,
) -> pd.DataFrame:
    """Training triples, most suspicious first by ``order_by``, one column per detector.

    :return: columns ``rank head relation tail train_index`` and one per detector
    """
    if order_by not in scores:
        raise KGTracinError(f"cannot order by {order_by!r}: it was not computed")
    order = torch.argsort(scores[order_by], descending=True, stable=True)
    if top_k is not None:
        order = order[:top_k]
    triples = training_triples[order]
    named = labels.to_labels(triples) if labels is not None else triples.numpy()
    frame = pd.DataFrame(
        {
            "rank": range(1, len(order) + 1),
            "head": named[:, 0],
            "relation": named[:, 1],
            "tail": named[:, 2],
            "train_index": order.numpy(),
        }
    )
    for name, values in scores.items():
        frame[name] = values[order].numpy()
    return frame
