"""The ``held_out`` detector: each training triple judged by a model retrained without it (cross-fitting).

TracIn's self-influence estimates, to first order, how much a triple's own training steps lowered its loss: the
gap between the model trained on it and one trained without it. ``memorization`` divides it by what the other
triples did. This detector measures that judgement instead of estimating it: the training triples are split into K
random folds of (nearly) equal size (copies of a triple share a fold), the run's recipe is retrained K times with
its own seed (:func:`kgtracin.training.fit`, the code ``kgtracin train`` ran), each time without one fold, and each
triple is scored by the model that never saw it:

    x(h, r, t) = log rank(t | h, r) + log rank(h | r, t)
    held_out(h, r, t) = (x(h, r, t) - mean_r) / std_r

the filtered, realistic ranks among all entities, other training triples filtered, standardised among the training
triples of the same relation r. A fact the rest of the graph predicts ranks near 1; a fake, a random entity in a
real fact's place, ranks like a random entity. Some relations' real facts are hard to predict from the rest of the
graph whatever their truth (a concept's one parent in a hierarchy): their raw log ranks crowd the top of the order.
Standardising within the relation, as triple classification sets one threshold per relation, compares each fact
with its relation's other facts instead. A relation's mean and deviation start from a few pseudo-triples at all
triples' (:func:`standardized_by_relation`), so that a small relation leans on the whole graph.

It costs K retrainings (K times the run's training), against a few passes over the training triples for a TracIn
detector, and it needs the run's recipe (a run made by ``kgtracin train``). Measured against the field's fakes
(docs/quality/): it finds them far better than every TracIn detector on UMLS, and on the sparse WordNet graph it is
bounded by what a model trained without a fact can say about it, which is little (the held-out ceiling,
``benchmarks/noisy_ceiling.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..calibrations import inside
from ..errors import KGTracinError
from ..predictions import KnownTriples, head_view, tail_view
from ..retrainings import cache_folder as retrainings_folder
from ..retrainings import keep_state, read_state, retraining_key
from .end_to_end import _Retrainer, retraining_config

__all__ = [
    "HeldOutConfig",
    "held_out_scores",
    "cross_fit",
    "check_held_out",
    "kept_folds",
    "folds_of",
    "log_ranks",
    "ranks_both_ways",
    "standardized_by_relation",
    "RELATION_PRIOR",
]

logger = logging.getLogger(__name__)

_PURPOSE = "the held_out detector retrains"
#: pseudo-triples at all triples' mean and variance that each relation's moments start from
RELATION_PRIOR = 5.0
#: triples ranked at once: a (batch x entities) score matrix per side
_BATCH = 512


@dataclass(frozen=True)
class HeldOutConfig:
    """How the ``held_out`` detector cross-fits a run."""

    #: retrainings, each without one fold of the training triples (1/folds of them)
    folds: int = 5
    #: the folds' random split (the retrainings use the run's own seed)
    seed: int = 0
    #: standardise the log ranks among each relation's training triples (False: the raw log ranks)
    by_relation: bool = True
    #: pseudo-triples at all triples' mean and variance that each relation's moments start from
    #: (:func:`standardized_by_relation`)
    relation_prior: float = RELATION_PRIOR
    progress: bool = True
    #: keep each retrained model in kgtracin's cache folder and read it back instead of retraining it
    #: (:mod:`kgtracin.retrainings`): an interrupted cross-fitting resumes, and the next one of the run is free
    keep: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise KGTracinError(f"the held_out detector needs at least 2 folds, got {self.folds!r}")
        _check_prior(self.relation_prior)


def _check_prior(prior) -> None:
    if isinstance(prior, bool) or not isinstance(prior, (int, float)) or not 0 < prior < math.inf:
        raise KGTracinError(
            f"the held_out detector's relation prior must be a positive number of triples, got {prior!r}"
        )


def folds_of(triples: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """A random fold per training row. Rows holding the same triple share the fold of the first of them (a copy
    left in training would let the model see the triple it judges); where no triple repeats, the folds' sizes differ
    by at most one.

    :param triples: shape: (N, 3), dtype: long
    :return: shape: (N,), dtype: long, values in ``[0, folds)``
    """
    n = triples.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fold = torch.empty(n, dtype=torch.long)
    fold[order] = torch.arange(n) % folds
    distinct, which = torch.unique(triples, dim=0, return_inverse=True)
    first = torch.full((distinct.shape[0],), n, dtype=torch.long).scatter_reduce(0, which, torch.arange(n), "amin")
    return fold[first[which]]


def ranks_both_ways(model, triples: torch.Tensor, known: KnownTriples) -> tuple[torch.Tensor, torch.Tensor]:
    """Each triple's filtered, realistic rank among all tails of ``(h, r, ?)`` and among all heads of ``(?, r, t)``.

    :param triples: shape: (B, 3), dtype: long, dataset ids
    :return: tail ranks and head ranks, each shape: (B,), float64, rank 1 is best
    :raises KGTracinError: where the model gives a non-finite score (a diverged retraining: no rank would mean
        anything)
    """
    tails, heads = [], []
    for start in range(0, triples.shape[0], _BATCH):
        batch = triples[start : start + _BATCH]
        (tail_score, tail_rank), (head_score, head_rank) = (
            tail_view(model, batch, known),
            head_view(model, batch, known),
        )
        if not (torch.isfinite(tail_score).all() and torch.isfinite(head_score).all()):
            raise KGTracinError(
                "held_out: a model retrained without a fold gives non-finite scores (the retraining diverged); "
                "its ranks would mean nothing"
            )
        tails.append(tail_rank.double())
        heads.append(head_rank.double())
    if not tails:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    return torch.cat(tails), torch.cat(heads)


def log_ranks(model, triples: torch.Tensor, known: KnownTriples) -> torch.Tensor:
    """``log rank(t | h, r) + log rank(h | r, t)`` of each triple (:func:`ranks_both_ways`).

    :param triples: shape: (B, 3), dtype: long, dataset ids
    :return: shape: (B,), float64; 0 where the triple ranks first both ways
    """
    tail, head = ranks_both_ways(model, triples, known)
    return (tail * head).log()  # equal rank products tie exactly (log 1 + log 3 and log 1.5 + log 2 differ)


def standardized_by_relation(
    scores: torch.Tensor, relations: torch.Tensor, prior: float = RELATION_PRIOR, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Each score minus its relation's mean, over its relation's standard deviation, where a relation's moments
    start from ``prior`` pseudo-triples at the mean and variance of all scores (empirical-Bayes shrinkage):

        mean_r = (sum_r w x + k mean) / (W_r + k)
        var_r = (sum_r w (x - mean_r)^2 + k (var + (mean - mean_r)^2)) / (W_r + k)

    with W_r the relation's total weight and ``k = prior``. A large relation keeps its own moments; a small one
    leans on all triples' (a lone triple is compared with all of them), so a relation of two triples does not
    pin them to -1 and +1 whatever their scores. Where every score is equal, every result is 0.

    :param scores: shape: (N,), finite
    :param relations: shape: (N,), dtype: long
    :param prior: pseudo-triples, > 0
    :param weights: shape: (N,), finite and > 0: how many triples each score stands for (a sample weighed to a
        population); ``None``: one each
    :return: shape: (N,), float64
    :raises KGTracinError: for a non-finite score, a weight that is not finite and positive, a prior that is not,
        or shapes that disagree
    """
    scores = scores.double()
    weights = torch.ones_like(scores) if weights is None else weights.double()
    if not (scores.shape == relations.shape == weights.shape and scores.dim() == 1):
        raise KGTracinError("standardized_by_relation: scores, relations and weights must be vectors of one length")
    if not torch.isfinite(scores).all():
        raise KGTracinError("standardized_by_relation: a score is not finite")
    if not (torch.isfinite(weights).all() and (weights > 0).all()):
        raise KGTracinError("standardized_by_relation: every weight must be finite and positive")
    _check_prior(prior)
    if scores.numel() == 0 or scores.max() == scores.min():
        return torch.zeros_like(scores)
    x = (scores - scores.min()) / (scores.max() - scores.min())  # in [0, 1]: the result is the same, the sums safer
    share = weights / weights.sum()
    mean = (share * x).sum()
    var = (share * (x - mean) ** 2).sum()
    _, group = torch.unique(relations, return_inverse=True)

    def by_group(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(int(group.max()) + 1, dtype=torch.float64).index_add_(0, group, values)

    total = by_group(weights) + prior
    mean_r = (by_group(weights * x) + prior * mean) / total
    var_r = (by_group(weights * (x - mean_r[group]) ** 2) + prior * (var + (mean - mean_r) ** 2)) / total
    return (x - mean_r[group]) / var_r[group].sqrt()


def check_held_out(run, config: HeldOutConfig, purpose: str = _PURPOSE) -> None:
    """Refuse, before any computation, a run :func:`held_out_scores` cannot cross-fit.

    :param purpose: what retrains, for the refusal of a run without a recipe
    :raises KGTracinError: for a run without a recipe, or with fewer training triples than folds
    """
    retraining_config(run, purpose)
    distinct = torch.unique(run.training_triples, dim=0).shape[0]
    if distinct < config.folds:
        raise KGTracinError(
            f"{config.folds} folds need at least as many distinct training triples; the run has {distinct}"
        )


def held_out_scores(run, config: HeldOutConfig = HeldOutConfig()) -> torch.Tensor:
    """Each training triple's ``held_out`` score: its log ranks under a model retrained without its fold.

    :param run: a :class:`~kgtracin.runs.Run` made by ``kgtracin train`` (its manifest holds the recipe)
    :return: shape: (N,), float64, higher is more suspicious, in the order of ``run.training_triples``: the log
        ranks standardised within each relation (:func:`standardized_by_relation`), or, with ``by_relation=False``,
        the log ranks themselves
    :raises KGTracinError: for a run without a recipe, with fewer distinct training triples than folds, or whose
        retraining diverges
    """
    scores, _ = cross_fit(run, config)
    return (
        standardized_by_relation(scores, run.training_triples[:, 1], config.relation_prior)
        if config.by_relation
        else scores
    )


def cross_fit(
    run, config: HeldOutConfig, probes: torch.Tensor | None = None, probe_folds: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The raw log ranks (:func:`log_ranks`) of each training triple under the model retrained without its fold,
    and of each probe triple (a triple of no fold, such as a planted fake) under the model of the fold it is given.

    :param probes: shape: (M, 3), dtype: long, dataset ids, or ``None``
    :param probe_folds: shape: (M,), dtype: long, values in ``[0, config.folds)``
    :return: shape: (N,) and (M,) (``None`` without probes), float64
    :raises KGTracinError: as :func:`held_out_scores`
    """
    check_held_out(run, config)
    if (probes is None) != (probe_folds is None):
        raise KGTracinError("cross_fit: probes and probe_folds go together")
    if probes is not None:
        ok = probes.dim() == 2 and probes.shape[1] == 3 and probe_folds.shape == (probes.shape[0],)
        if not ok or probe_folds.dtype.is_floating_point or probe_folds.dtype == torch.bool:
            raise KGTracinError("cross_fit: probes must be of shape (M, 3), with one integer fold each")
        if probe_folds.numel() and not (int(probe_folds.min()) >= 0 and int(probe_folds.max()) < config.folds):
            raise KGTracinError(f"cross_fit: every probe's fold must be in [0, {config.folds})")
    train = run.training_triples
    retrain = _Retrainer(run, progress=False)  # check_held_out refused a run without a recipe
    fold = folds_of(train, config.folds, config.seed)
    known = KnownTriples([train])
    scores = torch.empty(train.shape[0], dtype=torch.float64)
    probed = None if probes is None else torch.full((probes.shape[0],), torch.nan, dtype=torch.float64)
    keyed = _keepable(run, config)
    if config.keep and run.path is not None and not keyed:
        logger.warning("retrainings not kept: the cache folder %s is inside the run's folder", retrainings_folder())
    model = None
    for f in tqdm(range(config.folds), desc="held_out: retraining without each fold", disable=not config.progress):
        rows = (fold == f).nonzero().flatten()
        del model  # one retrained model at a time
        key = retraining_key(run, config.folds, config.seed, f) if keyed else None
        state = read_state(key)
        model = None if state is None else retrain.rebuilt(rows.tolist(), state)
        del state  # the model holds its own copy
        kept = model is not None
        if not kept:
            model = retrain(rows.tolist())
        scores[rows] = log_ranks(model, train[rows], known)
        if probes is not None:
            mine = probe_folds == f
            probed[mine] = log_ranks(model, probes[mine], known)
        if not kept:  # kept once it scored: a retraining that diverged is refused again, not read back
            keep_state(key, model.state_dict())
        how = "read back" if kept else "retrained"
        logger.info("held_out: fold %d of %d (%d triples) %s and scored", f + 1, config.folds, rows.numel(), how)
    return scores, probed


def kept_folds(run, config: HeldOutConfig) -> int:
    """How many of the run's K retrainings :func:`cross_fit` would read back instead of retraining (kept, intact,
    and fitting the model the recipe builds)."""
    if not (run.has_recipe and _keepable(run, config)):
        return 0
    fold, retrain, count = folds_of(run.training_triples, config.folds, config.seed), None, 0
    for f in range(config.folds):
        state = read_state(retraining_key(run, config.folds, config.seed, f))
        if state is not None:
            retrain = retrain or _Retrainer(run, progress=False)
            count += retrain.rebuilt((fold == f).nonzero().flatten().tolist(), state) is not None
    return count


def _keepable(run, config: HeldOutConfig) -> bool:
    """Whether the run's retrainings are kept: asked for, the run has a folder, and the cache folder is not in it."""
    return config.keep and run.path is not None and not inside(retrainings_folder(), run.path)
