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
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .checkpoints import (
    Checkpoint,
    check_state,
    load_state_dict_file,
    read_checkpoint_folder,
)
from .errors import KGTracinError
from .triples import Labels, read_labeled_triples

__all__ = ["Run", "load_run", "read_manifest", "MANIFEST", "RUN_FORMAT", "write_labels", "read_labels", "check_run_dir"]

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
    def has_recipe(self) -> bool:
        """Whether the manifest holds a training recipe (a run made by ``kgtracin train``), readable or not."""
        manifest = self.manifest or {}
        training, kwargs = manifest.get("training"), manifest.get("model_kwargs")
        return isinstance(training, dict) and isinstance(kwargs, dict) and "model" in manifest

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
    except OSError as error:
        raise KGTracinError(f"cannot read run file {path}: {error.strerror}") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        raise KGTracinError(f"run file {path} is malformed (expected columns id, label)") from None
    return tuple(frame["label"])


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a kgtracin run directory."""
    return _read_manifest(Path(path))


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except OSError as error:
        raise KGTracinError(f"cannot read {path / MANIFEST}: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise KGTracinError(f"{path / MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != RUN_FORMAT:
        raise KGTracinError(f"{path / MANIFEST} is not a kgtracin run manifest ({RUN_FORMAT})")
    return manifest


def _field(manifest: dict, where: Path, name: str, kind: type, what: str, default: object = KeyError):
    """A manifest field of the expected type. :raises KGTracinError: naming the field and what it should be"""
    if name not in manifest or manifest[name] is None:
        if default is not KeyError:
            return default
        raise KGTracinError(f"{where} lacks the field {name!r} ({what})")
    value = manifest[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise KGTracinError(f"{where}: field {name!r} must be {what}, got {type(value).__name__} {value!r:.60}")
    return value


def _inside(path: Path, file: object, field_name: str, where: Path) -> Path:
    """A file named by the manifest, which must lie inside the run directory."""
    if not isinstance(file, str) or not file:
        raise KGTracinError(f"{where}: {field_name} must be a file name inside the run directory, got {file!r:.60}")
    resolved = (path / file).resolve()
    if path.resolve() not in resolved.parents:
        raise KGTracinError(f"{where}: {field_name} {file!r} lies outside the run directory")
    return path / file


def _load_kgtracin_run(path: Path, trust_pickle: bool = False) -> Run:
    from pykeen.models import model_resolver
    from pykeen.triples import TriplesFactory

    where = path / MANIFEST
    manifest = _read_manifest(path)
    split_files = _field(manifest, where, "splits", dict, "an object mapping split names to files")
    if "training" not in split_files:
        raise KGTracinError(f"{where}: field 'splits' names no training split")
    model_name = _field(manifest, where, "model", str, "a PyKEEN model name")
    try:
        model_resolver.lookup(model_name)
    except (KeyError, ValueError):
        raise KGTracinError(f"{where}: unknown model {model_name!r}") from None
    model_kwargs = _field(manifest, where, "model_kwargs", dict, "an object of model arguments", {})
    inverse = _field(manifest, where, "inverse_triples", bool, "true or false")
    seed = _field(manifest, where, "seed", int, "an integer", 0)
    if not 0 <= seed < 2**32:
        raise KGTracinError(f"{where}: field 'seed' must be an integer from 0 to 2**32 - 1, got {seed}")
    final = _inside(path, _field(manifest, where, "final_model", str, "a file name"), "final_model", where)
    entries = _field(manifest, where, "checkpoints", list, "a list of {file, learning_rate}")
    labels = Labels(read_labels(path / "entities.tsv"), read_labels(path / "relations.tsv"))
    splits = {}
    for name, file in split_files.items():
        file = _inside(path, file, f"split {name!r}", where)
        splits[name] = labels.to_ids(read_labeled_triples(file), source=str(file))
    factory = TriplesFactory(
        splits["training"], labels.entity_to_id, labels.relation_to_id, create_inverse_triples=inverse
    )
    try:
        model = model_resolver.make(model_name, model_kwargs, triples_factory=factory, random_seed=seed)
    except Exception as error:
        detail = " ".join(str(error).split())[:160]
        raise KGTracinError(
            f"{where}: cannot build model {model_name} from model_kwargs ({type(error).__name__}: {detail})"
        ) from None
    state = load_state_dict_file(final, trust_pickle=trust_pickle)
    check_state(state, model, f"model file {final}")
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise KGTracinError(f"model file {final} does not match the manifest") from None
    checkpoints = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise KGTracinError(f"{where}: checkpoint {number} must be an object {{file, learning_rate}}")
        file = _inside(path, entry.get("file"), f"checkpoint {number} file", where)
        rate = entry.get("learning_rate")
        try:
            ok = not isinstance(rate, bool) and isinstance(rate, (int, float)) and 0 < float(rate) < math.inf
        except OverflowError:
            ok = False
        if not ok:
            raise KGTracinError(
                f"{where}: checkpoint {number} learning_rate must be a positive number, got {rate!r:.60}"
            )
        if file.is_dir():
            raise KGTracinError(f"checkpoint file {file} is a folder, not a file")
        if not file.is_file():
            raise KGTracinError(f"checkpoint file {file} is missing")
        checkpoints.append(Checkpoint(str(file), float(rate), trust_pickle))
    if not checkpoints:
        logger.warning(
            "%s lists no checkpoints: using the final weights with learning rate 1.0, which is not "
            "TracIn over training; train with --checkpoints N",
            where,
        )
        checkpoints = [Checkpoint(str(final), 1.0, trust_pickle)]
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
    except Exception as error:
        raise KGTracinError(f"model file {model_file} is corrupt or unreadable ({type(error).__name__})") from None
    if not isinstance(model, ERModel):
        raise KGTracinError(f"model file {model_file} does not hold a PyKEEN ERModel")
    triples_dir = path / "training_triples"
    if not triples_dir.is_dir():
        raise KGTracinError(f"{path} has no training_triples folder (save_to_directory(save_training=True))")
    try:
        factory = TriplesFactory.from_path_binary(triples_dir)
    except Exception as error:
        raise KGTracinError(f"cannot read {triples_dir} ({type(error).__name__})") from None
    labels = Labels.from_maps(factory.entity_to_id, factory.relation_to_id)
    return Run(
        model.cpu().eval(),
        factory.mapped_triples,
        [],
        labels,
        {"training": factory.mapped_triples},
        {"training": {"loss": type(model.loss).__name__}},
        path,
    )


def _dataset_splits(dataset: str, labels: Labels) -> dict[str, torch.Tensor]:
    """A PyKEEN dataset's validation and test splits, mapped through the run's labels."""
    from .datasets import labelled_splits

    splits = labelled_splits(dataset)  # refuses an unknown name
    return {
        name: labels.to_ids(splits[name], source=f"the {dataset} {name} split") for name in ("validation", "testing")
    }


def _checkpoint_folder_of(path: Path) -> Path | None:
    """A PyKEEN folder's checkpoints: its ``checkpoints/`` subfolder, else the folder itself when it holds
    checkpoint files (``CheckpointCallback(run_dir)`` beside ``save_to_directory(run_dir)``)."""
    from .checkpoints import CHECKPOINT_SUFFIXES

    if (path / "checkpoints").is_dir():
        return path / "checkpoints"
    if any(p.suffix in CHECKPOINT_SUFFIXES and p.is_file() and not p.name.startswith(".") for p in path.iterdir()):
        return path
    return None


def check_run_dir(path: str | os.PathLike) -> Path:
    """Refuse, in one line, what is not a run directory (before anything is loaded)."""
    path = Path(path)
    if path.is_file():
        raise KGTracinError(
            f"{path} is a file; give the run directory that holds it ({path.parent if str(path.parent) else '.'})"
        )
    if not path.is_dir():
        raise KGTracinError(f"run directory {path} does not exist")
    if not (path / MANIFEST).is_file() and not (path / "trained_model.pkl").is_file():
        raise KGTracinError(f"{path} is neither a kgtracin run (no {MANIFEST}) nor a PyKEEN result folder")
    return path


def load_run(
    path: str | os.PathLike,
    trust_pickle: bool = False,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    learning_rate: float | None = None,
    dataset: str | None = None,
) -> Run:
    """Load a ``kgtracin train`` run directory or a PyKEEN ``save_to_directory`` folder.

    Every file is read with ``torch.load(weights_only=True)``, which cannot run code, unless ``trust_pickle=True``:
    then a PyKEEN folder's ``trained_model.pkl`` (a whole pickled model) and **every** checkpoint and model file are
    fully unpickled, which can run code. Tensors saved on a GPU are loaded on the CPU.

    :param checkpoint_dir: a folder of checkpoints (:class:`~kgtracin.CheckpointCallback` files, PyKEEN
        ``CheckpointTrainingCallback`` or training-loop files) to use instead of the run's; for a PyKEEN folder the
        default is its ``checkpoints/`` subfolder when there is one
    :param learning_rate: the learning rate of every checkpoint, for files that do not record one
    :param dataset: the PyKEEN dataset a PyKEEN folder was trained on (any ``dataset_resolver`` name), for its
        validation and test splits
    :raises KGTracinError: for a missing, incomplete or corrupt directory
    """
    path = check_run_dir(path)
    if (path / MANIFEST).is_file():
        run = _load_kgtracin_run(path, trust_pickle)
    elif (path / "trained_model.pkl").is_file():
        run = _load_pykeen_folder(path, trust_pickle)
        if checkpoint_dir is None:
            checkpoint_dir = _checkpoint_folder_of(path)
    else:
        raise KGTracinError(f"{path} is neither a kgtracin run (no {MANIFEST}) nor a PyKEEN result folder")
    if checkpoint_dir is not None:
        run.checkpoints = read_checkpoint_folder(
            checkpoint_dir, learning_rate, trust_pickle, (run.labels.entity_to_id, run.labels.relation_to_id)
        )
    elif not run.checkpoints:
        lr = 1.0 if learning_rate is None else learning_rate
        logger.warning(
            "%s has no checkpoints: using the final weights with learning rate %g; save checkpoints "
            "with kgtracin.CheckpointCallback or give --checkpoint-dir",
            path,
            lr,
        )
        run.checkpoints = [Checkpoint(run.model.state_dict(), lr)]
    if dataset is not None:
        for name, triples in _dataset_splits(dataset, run.labels).items():
            run.splits.setdefault(name, triples)
    return run
