"""Checkpoints: a model state and the learning rate in force when it was saved."""

from __future__ import annotations

import copy
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

from .errors import KGTracinError

__all__ = ["Checkpoint", "load_state_dict_file", "materialize", "safe_load"]

StateLike = Union[Mapping[str, torch.Tensor], str, os.PathLike]


@dataclass(frozen=True)
class Checkpoint:
    """A saved model state ``w_c`` with the learning rate ``lr_c`` that weighs it in the TracIn sum.

    :param state: a ``state_dict``, or a path to a file holding one. A PyKEEN training checkpoint (a dict with
        ``model_state_dict``) or a whole pickled model also work.
    :param learning_rate: the learning rate in force at that point of training (PyKEEN checkpoints do not
        store it, so it must be given)
    :param trust_pickle: files are read with ``torch.load(weights_only=True)``, which cannot run code; a file
        holding pickled Python objects (a whole model) is refused unless this is True. Only for trusted files.
    """

    state: StateLike
    learning_rate: float
    trust_pickle: bool = False

    def __post_init__(self) -> None:
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or lr != lr or lr == float("inf"):
            raise KGTracinError(f"checkpoint learning rate must be a positive number, got {lr!r}")
        if not isinstance(self.state, (Mapping, str, os.PathLike)):
            raise KGTracinError(f"checkpoint state must be a state_dict or a path, got {type(self.state).__name__}")

    def load_state(self) -> Mapping[str, torch.Tensor]:
        """The state dict, read from disk if ``state`` is a path."""
        if isinstance(self.state, Mapping):
            return _unwrap(self.state, "checkpoint state")
        return load_state_dict_file(self.state, trust_pickle=self.trust_pickle)


def _unwrap(obj: Any, where: str) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KGTracinError(f"{where} does not hold a model state_dict")
    return obj


_LOAD_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError,
                AttributeError, ImportError, ModuleNotFoundError, TypeError, KeyError)


def safe_load(path: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` on CPU, safely: ``weights_only=True`` unless the caller trusts the file.

    :raises KGTracinError: for a corrupt file, or one that holds pickled objects when ``trust_pickle`` is False
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as error:
        if not trust_pickle and "weights only load failed" in str(error).lower() and "invalid load key" not in str(
                error).lower():
            raise KGTracinError(
                f"{path} holds pickled Python objects (such as a whole model), which can run code when loaded; "
                "kgtracin reads state dicts only, unless you pass --trust-pickle (API: trust_pickle=True) for a "
                "file you trust"
            ) from None
        raise KGTracinError(f"model file {path} is corrupt or unreadable ({type(error).__name__})") from None
    except _LOAD_ERRORS as error:
        raise KGTracinError(f"model file {path} is corrupt or unreadable ({type(error).__name__})") from None


def load_state_dict_file(path: str | os.PathLike, trust_pickle: bool = False) -> Mapping[str, torch.Tensor]:
    """Read a state dict (or a PyKEEN checkpoint holding one) from a file, on CPU, without running code.

    :param trust_pickle: also accept a whole pickled model (``torch.load(weights_only=False)``)
    :raises KGTracinError: when the file is missing, unreadable, or holds pickled objects that are not trusted
    """
    path = Path(path)
    if not path.is_file():
        raise KGTracinError(f"checkpoint file {path} does not exist")
    return _unwrap(safe_load(path, trust_pickle), f"model file {path}")


def materialize(model: nn.Module, checkpoint: Checkpoint, device: torch.device | None,
                dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` holding the checkpoint's weights, in ``eval()`` mode, on ``device``.

    :raises KGTracinError: when the state does not fit the model
    """
    state = checkpoint.load_state()
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
