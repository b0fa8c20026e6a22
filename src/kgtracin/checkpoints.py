"""Checkpoints: a model state and the learning rate in force when it was saved.

Files kgtracin reads as checkpoints, all with ``torch.load(weights_only=True)`` unless trusted:

* a plain ``state_dict`` (``kgtracin train`` runs, ``torch.save(model.state_dict())``);
* :class:`~kgtracin.CheckpointCallback` files: the state with its epoch, learning rate and label maps;
* PyKEEN ``CheckpointTrainingCallback`` files (``{"state_dict", "version"}``): no learning rate, give one;
* PyKEEN training-loop files (``checkpoint_name=...``): ``model_state_dict`` and ``optimizer_state_dict``, whose
  learning rate is used when none is given. They also pickle NumPy random states, so only ``trust_pickle``
  reads them.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import KGTracinError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "load_state_dict_file",
    "materialize",
    "safe_load",
    "read_checkpoint_folder",
    "recorded_learning_rate",
    "check_state",
]

StateLike = Mapping[str, torch.Tensor] | str | os.PathLike

#: file endings taken as checkpoints in a folder
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def _valid_rate(lr: Any) -> bool:
    return not isinstance(lr, bool) and isinstance(lr, (int, float)) and lr > 0 and lr != float("inf")


@dataclass(frozen=True)
class Checkpoint:
    """A saved model state ``w_c`` with the learning rate ``lr_c`` that weighs it in the TracIn sum.

    :param state: a ``state_dict``, or a path to a file holding one: a plain state dict, a
        :class:`~kgtracin.CheckpointCallback` file, or a PyKEEN checkpoint (``CheckpointTrainingCallback`` or
        training-loop ``checkpoint_name`` file). A whole pickled model also works with ``trust_pickle``.
    :param learning_rate: the learning rate in force during the steps before this checkpoint. ``None`` reads it
        from the file (``CheckpointCallback`` files, PyKEEN training-loop files); PyKEEN's callback files and
        plain state dicts do not record it, so it must be given
    :param trust_pickle: files are read with ``torch.load(weights_only=True)``, which cannot run code; a file
        holding pickled Python objects (a whole model) is refused unless this is True. Only for trusted files.
    """

    state: StateLike
    learning_rate: float | None = None
    trust_pickle: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.state, (Mapping, str, os.PathLike)):
            raise KGTracinError(f"checkpoint state must be a state_dict or a path, got {type(self.state).__name__}")
        lr = self.learning_rate
        if lr is None:
            content = self.state if isinstance(self.state, Mapping) else _read(Path(self.state), self.trust_pickle)
            lr = recorded_learning_rate(content)
            if lr is None:
                where = "the state" if isinstance(self.state, Mapping) else f"checkpoint {self.state}"
                raise KGTracinError(
                    f"{where} does not record its learning rate; give it "
                    "(Checkpoint(state, learning_rate), CLI --learning-rate)"
                )
            object.__setattr__(self, "learning_rate", lr)
        if not _valid_rate(lr) or lr != lr:
            raise KGTracinError(f"checkpoint learning rate must be a positive number, got {lr!r}")

    def load_state(self) -> Mapping[str, torch.Tensor]:
        """The state dict, read from disk if ``state`` is a path."""
        if isinstance(self.state, Mapping):
            return _unwrap(self.state, "checkpoint state")
        return load_state_dict_file(self.state, trust_pickle=self.trust_pickle)


def recorded_learning_rate(content: Any) -> float | None:
    """The learning rate a checkpoint's content records: a ``CheckpointCallback`` file's ``learning_rate``, or the
    first parameter group's ``lr`` in a PyKEEN training-loop file's ``optimizer_state_dict``; else None."""
    if not isinstance(content, Mapping):
        return None
    lr = content.get("learning_rate")
    if lr is None:
        groups = (
            (content.get("optimizer_state_dict") or {}).get("param_groups")
            if isinstance(content.get("optimizer_state_dict"), Mapping)
            else None
        )
        rates = {float(g["lr"]) for g in groups or () if isinstance(g, Mapping) and "lr" in g}
        if len(rates) > 1:
            raise KGTracinError(f"the checkpoint's optimizer has several learning rates {sorted(rates)}; give one")
        lr = rates.pop() if rates else None
    return float(lr) if _valid_rate(lr) else None


#: the format tag of the checkpoint files kgtracin writes (:class:`kgtracin.CheckpointCallback`)
CHECKPOINT_FORMAT = "kgtracin-checkpoint/1"


def _unwrap(obj: Any, where: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping) and "format" in obj and obj["format"] != CHECKPOINT_FORMAT:
        raise KGTracinError(
            f"{where} is a checkpoint of format {str(obj['format'])[:40]!r}; this kgtracin reads "
            f"{CHECKPOINT_FORMAT!r} (a newer kgtracin wrote it?)"
        )
    if isinstance(obj, Mapping):
        for key in ("model_state_dict", "state_dict"):  # PyKEEN training-loop / callback, CheckpointCallback files
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KGTracinError(f"{where} does not hold a model state_dict")
    return obj


def safe_load(path: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` on CPU, safely: ``weights_only=True`` unless the caller trusts the file.

    :raises KGTracinError: for a corrupt file, or one that holds pickled objects when ``trust_pickle`` is False
    """
    if path.is_dir():
        raise KGTracinError(f"model file {path} is a folder, not a file")
    try:
        with warnings.catch_warnings():  # torch's remarks on a damaged file are not the error
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        if not trust_pickle and _is_pickle(path):
            raise KGTracinError(
                f"{path} holds pickled Python objects (such as a whole model), which can run code when loaded; "
                "kgtracin reads state dicts only, unless you pass --trust-pickle (API: trust_pickle=True) for a "
                "file you trust"
            ) from None
        raise KGTracinError(f"model file {path} is corrupt or unreadable ({type(error).__name__})") from None
    except PermissionError:
        raise KGTracinError(f"cannot read {path}: permission denied") from None
    except Exception as error:
        raise KGTracinError(f"model file {path} is corrupt or unreadable ({type(error).__name__})") from None


def _is_pickle(path: Path) -> bool:
    """Whether a file is a well-formed torch save (a zip holding ``data.pkl``) or a legacy pickle: then a
    ``weights_only`` failure means it holds Python objects; anything else is a corrupt file."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith("data.pkl") for name in archive.namelist())
        with open(path, "rb") as handle:
            return handle.read(1) == b"\x80"
    except (OSError, zipfile.BadZipFile):
        return False


def check_state(state: Mapping[str, torch.Tensor], model: nn.Module | None, where: str) -> None:
    """Refuse a state with NaN or infinite weights, tensors without data, or complex tensors for real parameters.

    :raises KGTracinError: naming ``where`` and the tensor
    """
    own = model.state_dict() if model is not None else {}
    for name, tensor in state.items():
        if tensor.is_meta:
            raise KGTracinError(f"{where} holds tensors without data ({name} is on the meta device)")
        if name in own and tensor.is_complex() != own[name].is_complex():
            raise KGTracinError(f"{where}: {name} is {tensor.dtype}, but the model's is {own[name].dtype}")
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            raise KGTracinError(
                f"{where} holds NaN or infinite weights ({name}); training diverged there, and no "
                "influence can be computed from it"
            )


def load_state_dict_file(path: str | os.PathLike, trust_pickle: bool = False) -> Mapping[str, torch.Tensor]:
    """Read a state dict (or a PyKEEN checkpoint holding one) from a file, on CPU, without running code.

    :param trust_pickle: also accept a whole pickled model (``torch.load(weights_only=False)``)
    :raises KGTracinError: when the file is missing, unreadable, or holds pickled objects that are not trusted
    """
    path = Path(path)
    return _unwrap(_read(path, trust_pickle), f"model file {path}")


def _read(path: Path, trust_pickle: bool) -> Any:
    if path.is_dir():
        raise KGTracinError(f"checkpoint file {path} is a folder, not a file")
    if not path.is_file():
        raise KGTracinError(f"checkpoint file {path} does not exist")
    return safe_load(path, trust_pickle)


def _epoch_of(path: Path, content: Any) -> tuple:
    epoch = content.get("epoch") if isinstance(content, Mapping) else None
    if not isinstance(epoch, int):
        numbers = re.findall(r"\d+", path.stem)
        epoch = int(numbers[-1]) if numbers else None
    return (epoch is None, epoch or 0, path.name)


def read_checkpoint_folder(
    directory: str | os.PathLike,
    learning_rate: float | None = None,
    trust_pickle: bool = False,
    labels: tuple[Mapping[str, int], Mapping[str, int]] | None = None,
) -> list[Checkpoint]:
    """Every checkpoint file (``*.pt``, ``*.pth``) in a folder, in epoch order.

    The order is the recorded epoch, else the last number in the file name (PyKEEN's
    ``checkpoint_0000010.pt``), else the name.

    :param learning_rate: used for every checkpoint when given; else each file's recorded rate
    :param labels: the run's ``(entity_to_id, relation_to_id)``; a file that records other label maps (a
        :class:`~kgtracin.CheckpointCallback` file given the training triples) is refused
    :raises KGTracinError: for a missing or empty folder, an unreadable file, a file without a learning rate
        when none is given, or one saved for other labels
    """
    directory = Path(directory)
    if directory.is_file():
        raise KGTracinError(f"checkpoint directory {directory} is a file, not a folder")
    if not directory.is_dir():
        raise KGTracinError(f"checkpoint directory {directory} does not exist")
    files = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise KGTracinError(f"checkpoint directory {directory} holds no *.pt or *.pth file")
    entries = []
    for path in files:
        content = safe_load(path, trust_pickle)
        _unwrap(content, f"checkpoint file {path}")  # a file that is no checkpoint fails here, by name
        recorded = content.get("entity_to_id") if isinstance(content, Mapping) else None
        if (
            labels is not None
            and isinstance(recorded, Mapping)
            and (dict(recorded) != dict(labels[0]) or dict(content.get("relation_to_id") or {}) != dict(labels[1]))
        ):
            raise KGTracinError(
                f"checkpoint {path} was saved for other entity or relation labels than the run's training triples"
            )
        lr = learning_rate if learning_rate is not None else recorded_learning_rate(content)
        if lr is None:
            raise KGTracinError(
                f"checkpoint {path} does not record its learning rate (PyKEEN's "
                "CheckpointTrainingCallback files do not); give --learning-rate"
            )
        entries.append((_epoch_of(path, content), Checkpoint(str(path), float(lr), trust_pickle)))
    return [checkpoint for _, checkpoint in sorted(entries, key=lambda e: e[0])]


def materialize(
    model: nn.Module, checkpoint: Checkpoint, device: torch.device | None, dtype: torch.dtype | None = None
) -> nn.Module:
    """A copy of ``model`` holding the checkpoint's weights, in ``eval()`` mode, on ``device``.

    :raises KGTracinError: when the state does not fit the model
    """
    state = checkpoint.load_state()
    where = f"checkpoint {checkpoint.state}" if isinstance(checkpoint.state, (str, os.PathLike)) else "a checkpoint"
    check_state(state, model, where)
    replica = copy.deepcopy(model)
    try:
        replica.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])
        raise KGTracinError(f"checkpoint does not match the model: {detail}") from None
    if device is not None:
        replica = replica.to(device)
    if dtype is not None:
        replica = replica.to(dtype)
    return replica.eval()
