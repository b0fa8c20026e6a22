"""Kept retrainings: the models of a cross-fitting, read back instead of retrained.

The ``held_out`` and ``learned`` columns retrain the run's recipe K times, each without one fold of the training
triples (:func:`kgtracin.evaluation.held_out.cross_fit`): hours on a real graph. Each retrained model depends only
on the run (its recipe and triples: :func:`kgtracin.calibrations.run_digest`), the folds (their number and seed),
which fold it left out, the versions of kgtracin, PyKEEN and torch and the code of kgtracin's training that
retrained it, and where it was retrained (a GPU where PyKEEN finds one; on a CPU, its kernels and thread count,
which change the rounding): the :func:`retraining_key`. So each model is kept as
soon as it has been retrained and scored, one file per key, and read back when the same retraining is asked for
again: an interrupted audit resumes at the fold it stopped in, and a second audit of the run (another
``--plant``, another order) retrains nothing.

The folder is the ``retrainings/`` folder of kgtracin's cache folder (``$KGTRACIN_CACHE_DIR``, else
``$XDG_CACHE_HOME/kgtracin``, else ``~/.cache/kgtracin``); each file holds one model's weights (the size of the
run's ``model.pt``), and the folder may be deleted at any time. The rules are those of kept calibrations: nothing
is kept inside the run's folder, an input; kgtracin writes only regular files named by a key's digest, through a
temporary file renamed into place, and replaces only a file of its own format, never a link or a file of the
user's; anything at that name that is not such a file, cannot be read, or holds another key counts as absent.
Files are read with ``torch.load(weights_only=True, mmap=True)``, which runs no code from the file and maps the
weights instead of reading them, and their weights are checked against the SHA-256 kept with them.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import torch

from ._version import __version__
from .calibrations import cache_folder as _calibrations_folder
from .calibrations import machine, run_digest
from .staging import keep_file

__all__ = ["FORMAT", "cache_folder", "retraining_key", "read_state", "keep_state"]

#: the ``format`` field of every file kept here
FORMAT = "kgtracin-retraining/1"


def cache_folder() -> Path:
    """Where kept retrainings live (the ``retrainings/`` folder of kgtracin's cache folder)."""
    return _calibrations_folder().parent / "retrainings"


#: the modules whose code decides a retrained model's weights (the package's version does not change with them)
_TRAINING_CODE = ("training.py", "scorers.py", "callbacks.py", "compat.py", "evaluation/end_to_end.py")


def _training_code() -> str:
    digest = hashlib.sha256()
    for name in _TRAINING_CODE:
        digest.update(name.encode())
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def retraining_key(run, folds: int, seed: int, fold: int) -> dict | None:
    """What the model retrained without fold ``fold`` of ``folds`` (split by ``seed``) depends on, as JSON;
    ``None`` for a run without a folder (nothing to say that it is the same run next time).

    Beside the run and the folds: the versions and the code that train, and where the training runs, down to what
    changes its rounding (a GPU where PyKEEN finds one; else the CPU's kernels and thread count).
    """
    digest = run_digest(run)
    if digest is None:
        return None
    from importlib.metadata import version

    return {
        "kgtracin": __version__,
        "code": _training_code(),
        "pykeen": version("pykeen"),
        "torch": str(torch.__version__),
        "machine": machine(),
        "run": digest,
        "folds": int(folds),
        "seed": int(seed),
        "fold": int(fold),
    }


def _checksum(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def _path(key: dict, folder: Path | None) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return (folder or cache_folder()) / f"{name}.pt"


def _read(path: Path) -> dict | None:
    """The record in a regular file of kgtracin's format at ``path`` (links followed), else ``None``. The weights
    are mapped from the file, not read into memory (``mmap``, which also refuses compressed entries)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a folder, a FIFO or a device: never opened, so never waited on
        record = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # whatever a damaged or foreign file raises, it is not a kept retraining
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def read_state(key: dict | None, folder: Path | None = None) -> dict[str, torch.Tensor] | None:
    """The kept weights for ``key`` (a model's ``state_dict``, mapped from the file), else ``None``; weights whose
    checksum is not the one kept with them (a damaged file) count as absent."""
    if key is None:
        return None
    record = _read(_path(key, folder))
    if record is None or record.get("key") != key:
        return None
    state = record.get("state")
    if not (isinstance(state, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items())):
        return None
    try:
        return state if record.get("checksum") == _checksum(state) else None
    except (RuntimeError, TypeError, ValueError):  # a tensor whose bytes cannot be viewed
        return None


def keep_state(key: dict | None, state: dict[str, torch.Tensor], folder: Path | None = None) -> Path | None:
    """Keep a retrained model's weights for ``key``; :return: the file, or ``None`` when it could not be kept
    (a warning says why)."""
    if key is None:
        return None
    path = _path(key, folder)
    state = {name: value.detach().cpu() for name, value in state.items()}
    record = {"format": FORMAT, "key": key, "state": state, "checksum": _checksum(state)}
    return keep_file(path, lambda tmp: torch.save(record, tmp), lambda found: _read(found) is not None, "retraining")
