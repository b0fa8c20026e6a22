"""A noisy-fact detector chosen from the run: plant fakes, retrain once, and keep the detector that finds them.

No detector of :mod:`kgtracin.audit` leads on every graph and model (``memorization`` on DistMult, self-influence
on ConvE over the WordNet graph, ``validation_cosine`` on UMLS DistMult). Which one finds a run's fakes depends
on the run, and the fakes are unknown. So plant known ones: add ``fraction`` fake triples to the run's training
triples (below), retrain **once** with the run's own recipe and seed (its manifest, as the
end-to-end evaluation does), score every detector on that calibration model, and choose the one whose ROC AUC
for the planted fakes is highest. The run's own unknown fakes count as real there, so the AUCs are those of a
slightly noisier graph. It costs one training and one audit of the calibration model.

The choice is only as good as the planted fakes' likeness to the run's own. By default it plants plausible fakes
(:func:`~.noisy.corrupt_plausible`: a head or tail the relation already has there), which fit the graph's types
as a wrong fact in a real graph does. ``plant="triples"`` plants the field's fakes instead, which mostly ask
queries no real fact asks and which the model-free ``support`` count finds.

:func:`calibrate` is what ``kgtracin audit`` calls (its default order for a run made by ``kgtracin train``): it
keeps each outcome (:mod:`kgtracin.calibrations`), so the training is paid once per run and settings.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..calibrations import cache_folder, inside, keep, key_for, read_kept
from ..config import PLANTS, CalibrationConfig
from ..errors import KGTracinError
from .noisy import corrupt, known_triples, roc_auc

__all__ = ["CalibrationConfig", "Calibration", "calibrate", "choose_detector", "key_for", "PLANTS"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """The detector chosen for a run, and how."""

    #: the detector whose ROC AUC for the planted fakes was highest
    chosen: str
    #: every detector compared -> its ROC AUC for the planted fakes (NaN: it gave NaN scores)
    aucs: dict[str, float]
    #: read back from an earlier calibration of the same run and settings (no training this time)
    reused: bool
    #: the file the outcome is kept in; ``None`` when it is not kept
    path: Path | None


def calibrate(
    run,
    detectors: tuple[str, ...],
    config: CalibrationConfig = CalibrationConfig(),
    folder: Path | None = None,
    before_training: Callable[[], None] | None = None,
    **tracin_kwargs,
) -> Calibration:
    """:func:`choose_detector`, kept: the outcome of an earlier calibration of the same run and settings is read
    back (:mod:`kgtracin.calibrations`), else it is computed and kept; with ``config.keep`` false it is computed
    and kept nowhere.

    :param folder: where outcomes are kept (default: :func:`kgtracin.calibrations.cache_folder`); one inside the
        run's folder keeps nothing (the run is an input)
    :param before_training: for :func:`choose_detector`, when the outcome is not kept
    """
    folder = folder or cache_folder()
    key = key_for(run, detectors, config, **tracin_kwargs) if config.keep else None
    if key is not None and inside(folder, run.path):
        logger.warning("calibration not kept: the cache folder %s is inside the run's folder, an input", folder)
        key = None
    kept = read_kept(key, folder)
    if kept is not None:
        chosen, aucs, path = kept
        logger.info("calibration read back from %s", path)
        return Calibration(chosen, aucs, True, path)
    chosen, aucs = choose_detector(run, detectors, config, before_training=before_training, **tracin_kwargs)
    return Calibration(chosen, aucs, False, keep(key, chosen, aucs, folder))


def choose_detector(
    run,
    detectors: tuple[str, ...],
    config: CalibrationConfig = CalibrationConfig(),
    before_training: Callable[[], None] | None = None,
    **tracin_kwargs,
):
    """The detector among ``detectors`` that best finds fakes planted in the run's training triples.

    :param run: a :class:`~kgtracin.runs.Run` made by ``kgtracin train`` (its manifest holds the recipe)
    :param before_training: called once every refusal below has passed, just before the retraining (to say it)
    :param tracin_kwargs: for :func:`~kgtracin.audit.detector_scores` (``loss``, ``method``, ``parameters``, ...)
    :return: the chosen detector, and every detector's ROC AUC for the planted fakes (ties: the earlier detector of
        ``detectors``). The baselines (``support``, ``loss``) can be chosen too: where the model's own loss or the
        graph's counts find the fakes best, they are the order a user wants
    :raises KGTracinError: for a run without a recipe, fewer than two detectors, or too few triples to plant one fake
    """
    from pykeen.triples import TriplesFactory

    from ..audit import detector_scores
    from ..callbacks import CheckpointCallback
    from ..checkpoints import Checkpoint
    from ..training import build_model, fit
    from .end_to_end import retraining_config

    if len(set(detectors)) < 2:
        raise KGTracinError(f"choosing a detector needs at least two; got {', '.join(detectors) or 'none'}")
    recipe, kwargs = retraining_config(run, "--order-by auto retrains")
    train = run.training_triples
    if round(config.fraction * train.shape[0]) < 1:
        raise KGTracinError(f"planting {config.fraction} of the run's {train.shape[0]} training triples plants none")
    known = known_triples(run)
    planted, fake = corrupt(
        config.plant, train, config.fraction, len(run.labels.entities), len(run.labels.relations), config.seed, known
    )
    if not fake.any():  # before the retraining, which can take many minutes
        raise KGTracinError("no fake could be planted: every corruption drawn was a known triple")
    factory = TriplesFactory(
        planted,
        run.labels.entity_to_id,
        run.labels.relation_to_id,
        create_inverse_triples=bool(recipe.inverse_triples),
    )
    logger.info("calibration: %d fakes planted; retraining %s with the run's recipe", int(fake.sum()), recipe.model)
    with tempfile.TemporaryDirectory(prefix="kgtracin-calibration-") as scratch:
        if before_training is not None:
            before_training()
        model = build_model(recipe, kwargs, factory)
        saver = CheckpointCallback(Path(scratch), epochs=recipe.checkpoint_epochs())
        fit(model, recipe, factory, callbacks=[saver], progress=config.progress)
        checkpoints = [Checkpoint(str(r["file"]), float(r["learning_rate"])) for r in saver.records]
        scores = detector_scores(
            model.eval(),
            planted,
            run.splits.get("validation"),
            checkpoints,
            detectors,
            labels=run.labels,
            **tracin_kwargs,
        )
    aucs = {name: roc_auc(scores[name], fake) for name in detectors}
    usable = [name for name in detectors if not math.isnan(aucs[name])]  # NaN: a detector with NaN scores
    if not usable:
        raise KGTracinError(f"no detector scored the planted fakes: {', '.join(detectors)} gave NaN")
    best = max(usable, key=lambda name: (aucs[name], -usable.index(name)))
    return best, aucs
