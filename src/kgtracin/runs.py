"""Run directories: what ``kgtracin train`` saves, and loading it (or a PyKEEN result folder) back.

A PyKEEN ``save_to_directory`` folder is a run too: its model is ``trained_model.pkl`` (read only when trusted),
its checkpoints are the folder's ``checkpoints/`` (as :class:`~kgtracin.CheckpointCallback` writes it) or any
folder given as ``checkpoint_dir``, and its test and validation splits come from ``dataset``.

A run directory holds::

    manifest.json           how the model was trained, the checkpoints and their learning rates
    entities.tsv            id <TAB> label
    relations.tsv           id <TAB> label
    triples/{training,validation,testing}.tsv   labelled triples
    checkpoints/*.pt        state dicts saved during training
    model.pt                the final state dict
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .checkpoints import Checkpoint, load_state_dict_file, read_checkpoint_folder
from .errors import KGTracinError
from .triples import Labels, read_labeled_triples

__all__ = ["Run", "load_run", "read_manifest", "MANIFEST", "RUN_FORMAT", "write_labels", "read_labels"]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RUN_FORMAT = "kgtracin-run/1"
SPLITS = ("training", "validation", "testing")


@dataclass
class Run:
    """A trained model with its checkpoints, triples (dataset ids) and labels."""

    model: nn.Module
    training_triples: torch.Tensor
    checkpoints: list[Checkpoint]
    labels: Labels
    splits: dict[str, torch.Tensor] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    #: the folder it was loaded from
    path: Path | None = None

    @property
    def training_loss(self) -> str:
        """The PyKEEN loss the model was trained with (from the manifest, else the model's own)."""
        recorded = (self.manifest.get("training") or {}).get("loss")
        return recorded or type(getattr(self.model, "loss", None)).__name__

    @property
    def tracin_loss(self) -> str:
        """The TracIn loss that matches training: ``softmax`` for a softmax / cross-entropy loss, else ``bce``."""
        from .losses import loss_for_training

        return loss_for_training(self.training_loss)


def write_labels(path: Path, labels: tuple[str, ...]) -> None:
    pd.DataFrame({"id": range(len(labels)), "label": labels}).to_csv(path, sep="\t", index=False)


def read_labels(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise KGTracinError(f"run file {path} is missing")
    try:
        frame = pd.read_csv(path, sep="\t", dtype={"label": str}, keep_default_na=False)
        if list(frame.columns) != ["id", "label"] or list(frame["id"]) != list(range(len(frame))):
            raise ValueError
    except (ValueError, pd.errors.ParserError):
        raise KGTracinError(f"run file {path} is malformed (expected columns id, label)") from None
    return tuple(frame["label"])


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a kgtracin run directory."""
    return _read_manifest(Path(path))


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KGTracinError(f"{path / MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise KGTracinError(f"{path / MANIFEST} is not a kgtracin run manifest ({RUN_FORMAT})")
    return manifest


def _load_kgtracin_run(path: Path) -> Run:
    from pykeen.models import model_resolver
    from pykeen.triples import TriplesFactory

    manifest = _read_manifest(path)
    try:
        labels = Labels(read_labels(path / "entities.tsv"), read_labels(path / "relations.tsv"))
        splits = {
            name: labels.to_ids(read_labeled_triples(path / file), source=str(path / file))
            for name, file in manifest["splits"].items()
        }
        factory = TriplesFactory(
            splits["training"], labels.entity_to_id, labels.relation_to_id,
            create_inverse_triples=bool(manifest["inverse_triples"]),
        )
        model = model_resolver.make(manifest["model"], manifest.get("model_kwargs") or {},
                                    triples_factory=factory, random_seed=manifest.get("seed", 0))
        state = load_state_dict_file(path / manifest["final_model"])
        try:
            model.load_state_dict(state)
        except RuntimeError:
            raise KGTracinError(f"model file {path / manifest['final_model']} does not match the manifest") from None
        checkpoints = [
            Checkpoint(str(path / entry["file"]), float(entry["learning_rate"])) for entry in manifest["checkpoints"]
        ]
    except (KeyError, TypeError) as error:
        raise KGTracinError(f"{path / MANIFEST} lacks a required field ({error})") from None
    for checkpoint in checkpoints:
        if not Path(checkpoint.state).is_file():
            raise KGTracinError(f"checkpoint file {checkpoint.state} is missing")
    if not checkpoints:
        checkpoints = [Checkpoint(str(path / manifest["final_model"]), 1.0)]
    return Run(model.eval(), splits["training"], checkpoints, labels, splits, manifest, path)


def _load_pykeen_folder(path: Path, trust_pickle: bool) -> Run:
    from pykeen.models import ERModel
    from pykeen.triples import TriplesFactory

    model_file = path / "trained_model.pkl"
    if not trust_pickle:
        raise KGTracinError(
            f"{path} is a PyKEEN result folder: its model is {model_file.name}, a whole pickled model that can "
            "run code when loaded; pass --trust-pickle (API: trust_pickle=True) if you trust it"
        )
    try:
        model = torch.load(model_file, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise KGTracinError(f"model file {model_file} is corrupt or unreadable ({type(error).__name__})") from None
    if not isinstance(model, ERModel):
        raise KGTracinError(f"model file {model_file} does not hold a PyKEEN ERModel")
    triples_dir = path / "training_triples"
    if not triples_dir.is_dir():
        raise KGTracinError(f"{path} has no training_triples folder (save_to_directory(save_training=True))")
    try:
        factory = TriplesFactory.from_path_binary(triples_dir)
    except Exception as error:  # noqa: BLE001
        raise KGTracinError(f"cannot read {triples_dir} ({type(error).__name__})") from None
    labels = Labels.from_maps(factory.entity_to_id, factory.relation_to_id)
    return Run(model.cpu().eval(), factory.mapped_triples, [], labels, {"training": factory.mapped_triples},
               {"training": {"loss": type(model.loss).__name__}}, path)


def _dataset_splits(dataset: str, labels: Labels) -> dict[str, torch.Tensor]:
    """A shipped PyKEEN dataset's validation and test splits, mapped through the run's labels."""
    from .training import dataset_splits

    splits = dataset_splits(dataset)  # refuses an unknown name
    return {name: labels.to_ids(splits[name], source=f"the {dataset} {name} split")
            for name in ("validation", "testing")}


def load_run(path: str | os.PathLike, trust_pickle: bool = False, *, checkpoint_dir: str | os.PathLike | None = None,
             learning_rate: float | None = None, dataset: str | None = None) -> Run:
    """Load a ``kgtracin train`` run directory or a PyKEEN ``save_to_directory`` folder.

    Every file is read with ``torch.load(weights_only=True)``, which cannot run code, except a PyKEEN folder's
    ``trained_model.pkl`` (a whole pickled model) and PyKEEN training-loop checkpoints, which are read only with
    ``trust_pickle=True``. Tensors saved on a GPU are loaded on the CPU.

    :param checkpoint_dir: a folder of checkpoints (:class:`~kgtracin.CheckpointCallback` files, PyKEEN
        ``CheckpointTrainingCallback`` or training-loop files) to use instead of the run's; for a PyKEEN folder the
        default is its ``checkpoints/`` subfolder when there is one
    :param learning_rate: the learning rate of every checkpoint, for files that do not record one
    :param dataset: ``nations``, ``kinships`` or ``umls``: the shipped dataset a PyKEEN folder was trained on,
        for its validation and test splits
    :raises KGTracinError: for a missing, incomplete or corrupt directory
    """
    path = Path(path)
    if path.is_file():
        raise KGTracinError(f"{path} is a file; give the run directory that holds it "
                            f"({path.parent if str(path.parent) else '.'})")
    if not path.is_dir():
        raise KGTracinError(f"run directory {path} does not exist")
    if (path / MANIFEST).is_file():
        run = _load_kgtracin_run(path)
    elif (path / "trained_model.pkl").is_file():
        run = _load_pykeen_folder(path, trust_pickle)
        if checkpoint_dir is None and (path / "checkpoints").is_dir():
            checkpoint_dir = path / "checkpoints"
    else:
        raise KGTracinError(f"{path} is neither a kgtracin run (no {MANIFEST}) nor a PyKEEN result folder")
    if checkpoint_dir is not None:
        run.checkpoints = read_checkpoint_folder(checkpoint_dir, learning_rate, trust_pickle,
                                                 (run.labels.entity_to_id, run.labels.relation_to_id))
    elif not run.checkpoints:
        lr = 1.0 if learning_rate is None else learning_rate
        logger.warning("%s has no checkpoints: using the final weights with learning rate %g; save checkpoints "
                       "with kgtracin.CheckpointCallback or give --checkpoint-dir", path, lr)
        run.checkpoints = [Checkpoint(run.model.state_dict(), lr)]
    if dataset is not None:
        for name, triples in _dataset_splits(dataset, run.labels).items():
            run.splits.setdefault(name, triples)
    return run
