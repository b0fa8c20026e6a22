"""Kept detector choices: the audit's calibration, read back instead of retrained.

Choosing the audit's detector from a run (:func:`kgtracin.evaluation.calibration.calibrate`) costs one training
of the run's recipe. Its outcome depends only on the run's recipe (its manifest), its triples (every split: the
training triples are retrained on, all of them are kept out of the planted fakes, and the validation triples are
scored by two detectors), the detectors compared, the planted fakes (kind, fraction, seed), the TracIn loss and
parameters, the versions of kgtracin, PyKEEN and torch that retrain, and the :func:`machine` it is retrained on
(its rounding changes the retrained weights, and so, near a tie, the choice): the :func:`calibration_key`. So the
outcome is kept, one small JSON file per key, and read back when the same choice is asked for again (a second
audit of the run, or its report).

The folder is ``$KGTRACIN_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/kgtracin``, else ``~/.cache/kgtracin``;
the files are in its ``calibrations/``. Nothing is kept inside the run's folder, which is an input (a cache
folder there keeps nothing, with a warning). kgtracin writes only regular files named by a key's digest, through
a temporary file renamed into place, and replaces only a regular file it wrote itself (recognised by
:data:`FORMAT`), never a link or a file of the user's. Anything at that name that is not such a file, cannot be
read, or holds another key or broken values counts as absent; a folder that cannot be written or searched costs
the keeping only (a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import stat
from pathlib import Path

import torch

from ._version import __version__
from .config import AUDIT_LOSS, CalibrationConfig
from .staging import keep_file

__all__ = [
    "calibration_key",
    "key_for",
    "cache_folder",
    "run_digest",
    "machine",
    "inside",
    "read_kept",
    "keep",
    "FORMAT",
]

logger = logging.getLogger(__name__)

#: the ``format`` field of every file kept here
FORMAT = "kgtracin-calibration/1"
#: a kept file is a few hundred bytes; anything larger at its name is not one
_MAX_BYTES = 1 << 16

#: TracIn options not keyed as ``options``: the loss and parameters have fields of their own, and the others
#: change how the scores are computed, not what they are
_OWN_FIELD_OR_NEUTRAL = frozenset({"loss", "parameters", "method", "batch_size", "device", "progress"})


def cache_folder() -> Path:
    """Where kept calibrations live (the ``calibrations/`` folder of kgtracin's cache folder)."""
    root = os.environ.get("KGTRACIN_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "kgtracin") if xdg else os.path.join("~", ".cache", "kgtracin")
    return Path(os.path.expanduser(root)) / "calibrations"


def run_digest(run) -> str | None:
    """SHA-256 of the run's manifest (its recipe), its labels and every split's triples; ``None`` for a run
    without a folder (nothing to say that it is the same run next time).

    :param run: a :class:`~kgtracin.runs.Run`
    """
    if run.path is None:
        return None
    digest = hashlib.sha256(json.dumps(run.manifest, sort_keys=True).encode())
    digest.update(json.dumps([list(run.labels.entities), list(run.labels.relations)]).encode())
    for name, triples in sorted({**run.splits, "training": run.training_triples}.items()):
        triples = triples.to(torch.int64).contiguous()
        digest.update(f"{name}{tuple(triples.shape)}".encode())
        digest.update(triples.numpy().tobytes())
    return digest.hexdigest()


def machine() -> dict:
    """Where a retraining runs, down to what changes its rounding: a GPU where PyKEEN finds one (it trains there),
    else the CPU's architecture, the kernels torch picks for it, and torch's thread count."""
    if torch.cuda.is_available():
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    cpu = [platform.machine(), torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()]
    return {"device": "cpu", "cpu": cpu}


def inside(folder: Path, parent: Path) -> bool:
    """Whether ``folder`` is ``parent`` or lies below it (links resolved)."""
    folder, parent = Path(os.path.realpath(folder)), Path(os.path.realpath(parent))
    return folder == parent or parent in folder.parents


def calibration_key(
    run, detectors, *, plant: str, fraction: float, seed: int, loss: str, parameters, options: dict | None = None
) -> dict | None:
    """What a calibration's outcome depends on, as JSON; ``None`` when the run has no folder to identify it by.

    :param parameters: the TracIn parameter patterns (a list), or ``"all"``
    :param options: any other TracIn options that change scores (``precision``, ...), written as ``repr``
    """
    digest = run_digest(run)
    if digest is None:
        return None
    from importlib.metadata import version

    return {
        "kgtracin": __version__,
        "pykeen": version("pykeen"),
        "torch": torch.__version__,
        "machine": machine(),
        "run": digest,
        "detectors": list(detectors),
        "plant": plant,
        "fraction": float(fraction),
        "seed": int(seed),
        "loss": loss,
        "parameters": parameters if isinstance(parameters, str) else list(parameters),
        "options": {name: repr(value) for name, value in sorted((options or {}).items())},
    }


def key_for(run, detectors, config: CalibrationConfig = CalibrationConfig(), **tracin_kwargs) -> dict | None:
    """The :func:`calibration_key` of a calibration with these settings, as the audit passes them.

    :param tracin_kwargs: the detectors' TracIn options; the loss defaults to the audit's, no parameters or
        ``"all"`` mean all of them, and ``method``, ``batch_size``, ``device`` and ``progress`` are left out
    """
    parameters = tracin_kwargs.get("parameters") or "all"
    return calibration_key(
        run,
        detectors,
        plant=config.plant,
        fraction=config.fraction,
        seed=config.seed,
        loss=tracin_kwargs.get("loss") or AUDIT_LOSS,
        parameters=parameters if isinstance(parameters, str) else list(parameters),
        options={k: v for k, v in tracin_kwargs.items() if k not in _OWN_FIELD_OR_NEUTRAL},
    )


def _path(key: dict, folder: Path | None) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return (folder or cache_folder()) / f"{name}.json"


def _read(path: Path) -> dict | None:
    """The record in a regular file of kgtracin's format at ``path`` (links followed), else ``None``."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a folder, a FIFO or a device: never opened, so never waited on
        with open(path, "rb") as handle:
            text = handle.read(_MAX_BYTES + 1)
        record = json.loads(text) if len(text) <= _MAX_BYTES else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_kept(key: dict | None, folder: Path | None = None) -> tuple[str, dict[str, float], Path] | None:
    """The kept outcome for ``key``: the chosen detector, every detector's ROC AUC, and the file; else ``None``."""
    if key is None:
        return None
    path = _path(key, folder)
    record = _read(path)
    if record is None or record.get("key") != key:
        return None
    chosen, aucs = record.get("chosen"), record.get("aucs")
    if chosen not in key["detectors"] or not isinstance(aucs, dict) or set(aucs) != set(key["detectors"]):
        return None
    numbers = {name: _number(aucs[name]) for name in key["detectors"]}
    if any(value is None for value in numbers.values()) or math.isnan(numbers[chosen]):
        return None
    return chosen, numbers, path


def keep(key: dict | None, chosen: str, aucs: dict[str, float], folder: Path | None = None) -> Path | None:
    """Keep an outcome for ``key``; :return: the file, or ``None`` when it could not be kept (a warning says why)."""
    if key is None:
        return None
    path = _path(key, folder)
    record = {"format": FORMAT, "key": key, "chosen": chosen, "aucs": {k: float(v) for k, v in aucs.items()}}
    return keep_file(
        path,
        lambda tmp: tmp.write_text(json.dumps(record, indent=1), encoding="utf-8"),
        lambda found: _read(found) is not None,
        "calibration",
    )
