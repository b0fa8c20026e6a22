"""The ``learned`` detector: the held-out judgement and the graph's own cues, weighed by a classifier that learns
from fakes planted in the run.

No single cue finds the field's fakes on every graph. On UMLS the model retrained without a triple
(:mod:`~kgtracin.evaluation.held_out`) finds most of them; on the sparse WordNet graph it cannot, since many real
facts there are as hard to predict from the rest of the graph as a fake is, and cues that need no model find more:
an entity in a role its other roles rarely come with, a pair linked by two relations that rarely link one pair, a
second parent where every other entity has one (:mod:`kgtracin.consistency`). How much each cue is worth depends on
the graph, and the run does not say which of its triples are fake. So plant known fakes and learn it:

1. plant ``fraction`` fakes in the training triples, ``plantings`` times, each time afresh (by the field's protocol
   by default, :func:`~kgtracin.evaluation.noisy.corrupt`);
2. cross-fit the run once (:func:`~kgtracin.evaluation.held_out.cross_fit`): each training triple is ranked by the
   model retrained without its fold, each planted fake by the model of a random fold (a model that never saw it,
   as the training triple's never saw that triple);
3. describe every triple by four cues: its held-out log ranks standardised within its relation, role surprise,
   pair surprise and multiplicity surprise. With each planting, the training triples and its fakes are described
   together, in the graph of both (the standardisation's moments and the graph's counts; the log ranks come from
   models that saw neither the fakes nor the triple's fold); for the final scores, the training triples alone;
4. fit a gradient-boosted classifier (scikit-learn's ``HistGradientBoostingClassifier``) of planted fake against
   training triple, constrained to be monotone: more surprise never makes a triple less suspect;
5. score each training triple, its cues taken in the training graph, by the classifier's log-odds;
6. fit again without the ``set_aside`` share of training triples that the first fit finds most suspect among the
   real examples, and score by the second fit.

The run's own unknown fakes count as real in step 4. Those the first fit finds are set aside in step 6: counted as
real, they taught the classifier that the most suspect-looking triples are real, which cost precision at the top
(docs/quality/wordnet-noisy-field-protocol.md). Setting aside a larger share costs it again: the hardest real
triples go with them. The second classifier scores the training triples it was fitted on (as real), all but those
set aside; a review's synthetic check, made with the single fit, found the same ROC AUC as a cross-fitted
classifier's. It costs what the ``held_out`` column costs (K retrainings), plus ranking the planted fakes
(``plantings * fraction`` of the training triples) and the two fits. It learns the kind of fake it is shown: with
``plant="plausible"`` the graph's cues weigh less.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config import PLANTS
from ..consistency import multiplicity_surprise, pair_surprise, role_surprise
from ..errors import KGTracinError
from .held_out import RELATION_PRIOR, HeldOutConfig, check_held_out, cross_fit, standardized_by_relation
from .noisy import corrupt, known_triples

__all__ = ["LearnedConfig", "CUES", "cross_fitted_detectors", "cues", "check_learned", "plant_fakes"]

logger = logging.getLogger(__name__)

_PURPOSE = "the learned detector retrains"

#: the cues the classifier weighs, in the order of :func:`cues`' columns
CUES: tuple[str, ...] = ("held_out", "role", "pair", "multiplicity")


@dataclass(frozen=True)
class LearnedConfig:
    """How the ``learned`` detector plants its fakes."""

    #: the kind of fakes planted (:data:`kgtracin.config.PLANTS`): ``triples``, the field's protocol, or
    #: ``plausible``
    plant: str = "triples"
    #: the fakes of one planting, as a share of the training triples
    fraction: float = 0.05
    #: plantings, each of fresh fakes judged in its own graph: more examples for the classifier, none more crowded
    plantings: int = 4
    #: the plantings' seeds start here; the classifier's too
    seed: int = 0
    #: the share of the training triples, the most suspect by a first fit, left out of the real examples of a second
    #: fit: the run's own fakes are among them, and counted as real they teach the classifier that fakes are real
    #: just where its order matters most. ``0`` fits once
    set_aside: float = 0.02

    def __post_init__(self) -> None:
        if self.plant not in PLANTS:
            raise KGTracinError(f"unknown kind of planted fakes {self.plant!r}; choose from {', '.join(PLANTS)}")
        if not isinstance(self.fraction, (int, float)) or isinstance(self.fraction, bool) or not 0 < self.fraction < 1:
            raise KGTracinError(
                f"the learned detector's share of planted fakes must be in (0, 1), got {self.fraction!r}"
            )
        if isinstance(self.plantings, bool) or not isinstance(self.plantings, int) or self.plantings < 1:
            raise KGTracinError(f"the learned detector needs at least one planting, got {self.plantings!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32 - self.plantings:
            raise KGTracinError(
                f"the learned detector's seed must be an integer in [0, 2**32 - plantings), got {self.seed!r}"
            )
        aside = self.set_aside
        if not isinstance(aside, (int, float)) or isinstance(aside, bool) or not 0 <= aside < 1:
            raise KGTracinError(f"the learned detector's share set aside must be in [0, 1), got {aside!r}")


def check_learned(run, held_out: HeldOutConfig, learned: LearnedConfig) -> None:
    """Refuse, before any computation, a run :func:`cross_fitted_detectors` cannot serve.

    :raises KGTracinError: as :func:`~kgtracin.evaluation.held_out.check_held_out`, or for a run too small to plant
        one fake
    """
    check_held_out(run, held_out, _PURPOSE)
    if round(learned.fraction * run.training_triples.shape[0]) < 1:
        raise KGTracinError(
            f"the learned detector plants {learned.fraction} of the training triples, none of the run's "
            f"{run.training_triples.shape[0]}; plant a larger share"
        )


def cues(triples: torch.Tensor, log_ranks: torch.Tensor, graph: torch.Tensor, prior: float = RELATION_PRIOR):
    """The classifier's input: one row of :data:`CUES` per triple.

    :param triples: shape: (n, 3), dtype: long, the first n triples of ``graph``
    :param log_ranks: shape: (n,), their held-out log ranks (:func:`~kgtracin.evaluation.held_out.cross_fit`)
    :param graph: shape: (G, 3), dtype: long, G >= n, the graph the cues are judged in
    :return: shape: (n, 4), float64, a numpy array
    """
    n = triples.shape[0]
    columns = [
        standardized_by_relation(log_ranks, triples[:, 1], prior),
        role_surprise(graph)[:n],
        pair_surprise(graph)[:n],
        multiplicity_surprise(graph)[:n],
    ]
    return torch.stack(columns, 1).numpy()


def plant_fakes(run, learned: LearnedConfig) -> list[torch.Tensor]:
    """The fakes of each planting, drawn from the run's training triples and never a known triple.

    :return: ``plantings`` tensors, each shape: (F, 3), dtype: long, F >= 1
    :raises KGTracinError: where a planting draws no fake (every corruption drawn was a known triple)
    """
    train = run.training_triples
    known = known_triples(run)
    fakes = []
    for planting in range(learned.plantings):
        planted, fake = corrupt(
            learned.plant,
            train,
            learned.fraction,
            len(run.labels.entities),
            len(run.labels.relations),
            learned.seed + planting,
            known,
        )
        if not fake.any():
            raise KGTracinError("the learned detector could not plant fakes: every corruption drawn was a known triple")
        fakes.append(planted[fake])
    return fakes


def cross_fitted_detectors(
    run, held_out: HeldOutConfig | None = None, learned: LearnedConfig | None = None, fakes=None
) -> dict[str, torch.Tensor]:
    """The ``held_out`` and ``learned`` columns of a run, from one cross-fitting (module docstring).

    :param run: a :class:`~kgtracin.runs.Run` made by ``kgtracin train``
    :param fakes: the plantings' fakes (:func:`plant_fakes`), if drawn already
    :return: ``{"held_out": (N,), "learned": (N,)}``, float64, higher is more suspicious, in the order of
        ``run.training_triples``
    :raises KGTracinError: as :func:`check_learned`, or where no fake could be planted
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    held_out, learned = held_out or HeldOutConfig(), learned or LearnedConfig()
    check_learned(run, held_out, learned)
    train = run.training_triples
    fakes = plant_fakes(run, learned) if fakes is None else fakes
    sizes = [f.shape[0] for f in fakes]
    probes = torch.cat(fakes)
    probe_folds = torch.randint(
        held_out.folds, (probes.shape[0],), generator=torch.Generator().manual_seed(learned.seed)
    )
    scores, probed = cross_fit(run, held_out, probes, probe_folds)
    logger.info("learned: %d fakes planted in %d plantings; fitting the classifier", probes.shape[0], len(fakes))
    rows, labels = [], []
    for fake, fake_scores in zip(fakes, probed.split(sizes)):
        graph = torch.cat([train, fake])
        rows.append(cues(graph, torch.cat([scores, fake_scores]), graph, held_out.relation_prior))
        labels.append(np.r_[np.zeros(train.shape[0]), np.ones(fake.shape[0])])
    rows, labels = np.concatenate(rows), np.concatenate(labels)
    mine = cues(train, scores, train, held_out.relation_prior)

    def fitted(real) -> np.ndarray:
        """The log-odds of a classifier fitted to the rows ``real`` selects (a mask, or every row)."""
        classifier = HistGradientBoostingClassifier(monotonic_cst=[1] * len(CUES), random_state=learned.seed)
        return classifier.fit(rows[real], labels[real]).decision_function(mine)

    learned_scores = fitted(slice(None))
    aside = round(learned.set_aside * train.shape[0])
    if aside:
        suspect = np.zeros(train.shape[0], dtype=bool)
        suspect[np.argsort(-learned_scores, kind="stable")[:aside]] = True
        logger.info("learned: fitting again without the %d most suspect training triples as real examples", aside)
        learned_scores = fitted(np.concatenate([np.r_[~suspect, np.ones(size, dtype=bool)] for size in sizes]))
    return {
        "held_out": torch.from_numpy(mine[:, 0]).double() if held_out.by_relation else scores,
        "learned": torch.from_numpy(learned_scores).double(),
    }
