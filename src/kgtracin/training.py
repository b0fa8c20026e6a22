"""Training a PyKEEN model with checkpoints that record their learning rate (``kgtracin train``)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from pykeen.training.callbacks import TrainingCallback

from ._version import __version__
from .callbacks import CheckpointCallback
from .config import TrainingConfig
from .errors import KGTracinError
from .outputs import check_new_folder
from .recipes import recipe_for
from .runs import MANIFEST, RUN_FORMAT, write_labels
from .scorers import matrix_products
from .staging import ensure_folder, make_staging, publish_folder, remove_created
from .triples import Labels, read_labeled_triples, write_labeled_triples

__all__ = ["TrainingConfig", "train_run", "format_evaluation", "model_arguments", "build_model", "fit"]

logger = logging.getLogger(__name__)

#: words that make a first line of a training file a header, not a triple
_HEADER_WORDS = {
    "head",
    "relation",
    "tail",
    "subject",
    "predicate",
    "object",
    "source",
    "target",
    "h",
    "r",
    "t",
    "s",
    "p",
    "o",
    "rel",
    "relation_type",
}


def _load_splits(dataset: str | None, files: dict[str, str | None]) -> tuple[Labels, dict[str, np.ndarray]]:
    """Labelled splits and the labels (union of all splits, sorted) for a built-in dataset or TSV files."""
    if dataset is not None:
        from .datasets import labelled_splits, load_dataset

        ds = load_dataset(dataset.lower())
        return Labels.from_maps(ds.training.entity_to_id, ds.training.relation_to_id), labelled_splits(dataset)
    if files.get("training") is None:
        raise KGTracinError("give --dataset or --training FILE")
    splits = {name: read_labeled_triples(path) for name, path in files.items() if path is not None}
    for name, triples in splits.items():
        if {label.casefold() for label in triples[0]} <= _HEADER_WORDS:
            raise KGTracinError(
                f"{files[name]} line 1 looks like a header line ({', '.join(triples[0])}); the file "
                "should hold triples only"
            )
    everything = np.concatenate(list(splits.values()))
    entities = tuple(sorted(set(everything[:, 0]) | set(everything[:, 2])))
    relations = tuple(sorted(set(everything[:, 1])))
    return Labels(entities, relations), splits


class _EpochTimer(TrainingCallback):
    """Wall time of every epoch, from the first batch's start to the epoch's end (seconds)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._start: float | None = None

    def pre_batch(self, **kwargs) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def post_epoch(self, epoch: int, epoch_loss: float, **kwargs) -> None:
        now = time.perf_counter()
        self.seconds.append(round(now - (self._start if self._start is not None else now), 3))
        self._start = None


def _evaluate(model, ids: dict[str, torch.Tensor]) -> dict | None:
    """Filtered MRR and Hits@k on the test split (validation when there is none), filtered by all splits."""
    from .predictions import evaluate_model, unseen_notes

    split = "testing" if "testing" in ids else "validation" if "validation" in ids else None
    if split is None:
        return None
    result = evaluate_model(model, ids[split], list(ids.values()))
    result["split"] = split
    result["unseen_entity_triples"] = sum(bool(n) for n in unseen_notes(ids[split], ids["training"]))
    return result


def _instances(triples: torch.Tensor, config: TrainingConfig) -> int:
    """Training instances per epoch: LCWA trains one per distinct (head, relation) query (and per (tail, inverse
    relation) with inverse triples), sLCWA one per triple (and per inverse triple).

    :param triples: shape: (N, 3), the training triples without their inverses
    """
    if config.training_loop == "slcwa":
        return triples.shape[0] * (2 if config.inverse_triples else 1)
    queries = torch.unique(triples[:, :2], dim=0).shape[0]
    if config.inverse_triples:
        queries += torch.unique(triples[:, [2, 1]], dim=0).shape[0]
    return queries


def format_evaluation(evaluation: dict | None) -> str:
    """One line: ``filtered test MRR 0.612, Hits@1 0.48, Hits@3 0.70, Hits@10 0.87 (661 triples)``."""
    if not evaluation:
        return "no test or validation split: not evaluated"
    split = {"testing": "test", "validation": "validation"}[evaluation["split"]]
    return (
        f"filtered {split} MRR {evaluation['mrr']:.3f}, Hits@1 {evaluation['hits_at_1']:.3f}, "
        f"Hits@3 {evaluation['hits_at_3']:.3f}, Hits@10 {evaluation['hits_at_10']:.3f} "
        f"({evaluation['num_triples']} triples, both directions)"
    ) + _unseen_note(evaluation)


def _unseen_note(evaluation: dict) -> str:
    unseen = evaluation.get("unseen_entity_triples") or 0
    if not unseen:
        return ""
    return f"; note: {unseen} of them mention an entity that never occurs in training, whose embedding is untrained"


def model_arguments(config: TrainingConfig) -> dict:
    """PyKEEN's model arguments for ``config``: the model's recipe, the dimension and the loss (JSON values)."""
    recipe = recipe_for(config.model)
    model_kwargs = dict(recipe.model_kwargs)
    dim = config.embedding_dim if config.embedding_dim is not None else recipe.embedding_dim
    if dim is not None:
        model_kwargs["embedding_dim"] = dim
    model_kwargs["loss"] = config.loss
    return model_kwargs


def build_model(config: TrainingConfig, model_kwargs: dict, factory):
    """The untrained model, initialised from ``config.seed`` (the same seed gives the same weights).

    :raises KGTracinError: when PyKEEN cannot build it, or it cannot score a triple
    """
    from pykeen.models import model_resolver
    from pykeen.utils import set_random_seed

    set_random_seed(config.seed)
    try:
        model = model_resolver.make(config.model, model_kwargs, triples_factory=factory, random_seed=config.seed)
        with torch.no_grad():  # a model that cannot score (e.g. ConvE with too small an embedding) fails here
            model.eval().score_hrt(factory.mapped_triples[:2].to(next(model.parameters()).device))
        model.train()
    except (TypeError, ValueError, RuntimeError) as error:
        detail = " ".join(str(error).split())[:200]
        raise KGTracinError(f"cannot build model {config.model} with these settings: {detail}") from None
    return model


def fit(model, config: TrainingConfig, factory, *, callbacks=(), progress: bool = True, loop_cls=None) -> list[float]:
    """Train ``model`` in place with PyKEEN's loop, Adam and ``config`` (epochs resolved), scoring by matrix
    products where that is exact (:mod:`kgtracin.scorers`). ``kgtracin train`` and the end-to-end evaluation's
    retraining both train through here, so a retraining follows the run's recipe step for step.

    :param loop_cls: a PyKEEN training loop class in place of ``config.training_loop``'s (the end-to-end
        evaluation's same-batches retraining)
    :return: the loss of every epoch
    """
    from pykeen.training import LCWATrainingLoop, SLCWATrainingLoop

    optimizer = torch.optim.Adam(model.get_grad_params(), lr=config.learning_rate)
    if loop_cls is None:
        loop_cls = LCWATrainingLoop if config.training_loop == "lcwa" else SLCWATrainingLoop
    loop = loop_cls(model=model, triples_factory=factory, optimizer=optimizer)
    with matrix_products(model) as changed:
        if changed:
            logger.info("scoring %s by matrix products", ", ".join(changed))
        return loop.train(
            triples_factory=factory,
            num_epochs=config.epochs,
            batch_size=config.batch_size,
            callbacks=list(callbacks),
            use_tqdm=progress,
            use_tqdm_batch=progress,
        )


def train_run(
    output: str | os.PathLike,
    config: TrainingConfig,
    *,
    dataset: str | None = None,
    training: str | None = None,
    validation: str | None = None,
    testing: str | None = None,
    progress: bool = True,
) -> Path:
    """Train a model and write a run directory (atomically: built aside, then renamed into place).

    :return: the run directory
    :raises KGTracinError: for bad data, options, or an unusable output path
    """
    from pykeen.triples import TriplesFactory

    output = Path(output)
    check_new_folder(output)
    labels, splits = _load_splits(dataset, {"training": training, "validation": validation, "testing": testing})
    ids = {name: labels.to_ids(triples, source=name) for name, triples in splits.items()}
    factory = TriplesFactory(
        ids["training"], labels.entity_to_id, labels.relation_to_id, create_inverse_triples=config.inverse_triples
    )
    config = config.with_epochs(math.ceil(_instances(factory.mapped_triples, config) / config.batch_size))
    model_kwargs = model_arguments(config)
    model = build_model(config, model_kwargs, factory)
    created = ensure_folder(output.absolute().parent, f"the run directory {output}")
    try:
        staging = make_staging(output.absolute().parent, output.name)
    except OSError as error:
        remove_created(created)
        raise KGTracinError(f"cannot write the run directory {output}: {error.strerror}") from None
    try:
        (staging / "triples").mkdir()
        saver = CheckpointCallback(staging / "checkpoints", epochs=config.checkpoint_epochs())
        timer = _EpochTimer()
        losses = fit(model, config, factory, callbacks=[saver, timer], progress=progress)
        torch.save(model.state_dict(), staging / "model.pt")
        evaluation = _evaluate(model, ids)
        write_labels(staging / "entities.tsv", labels.entities)
        write_labels(staging / "relations.tsv", labels.relations)
        for name, _triples in splits.items():
            write_labeled_triples(staging / "triples" / f"{name}.tsv", labels.to_labels(ids[name]))
        manifest = {
            "format": RUN_FORMAT,
            "kgtracin_version": __version__,
            "dataset": dataset,
            "source_files": {"training": training, "validation": validation, "testing": testing},
            "model": config.model,
            "model_kwargs": model_kwargs,
            "inverse_triples": config.inverse_triples,
            "training": {k: v for k, v in asdict(config).items() if k not in ("model", "inverse_triples")},
            "optimizer": "Adam",
            "seed": config.seed,
            "losses": [float(x) for x in losses],
            "epoch_seconds": timer.seconds,
            "num_entities": len(labels.entities),
            "num_relations": len(labels.relations),
            "splits": {name: f"triples/{name}.tsv" for name in splits},
            "checkpoints": [{**record, "file": f"checkpoints/{record['file'].name}"} for record in saver.records],
            "final_model": "model.pt",
            "evaluation": evaluation,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        publish_folder(staging, output)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        remove_created(created)
        if isinstance(error, FileExistsError):
            raise KGTracinError(
                f"output {output} appeared during training and is not empty; nothing was written over it"
            ) from None
        if isinstance(error, OSError):
            raise KGTracinError(f"cannot write the run directory {output}: {error.strerror or error}") from None
        raise
    return output
