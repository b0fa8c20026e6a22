"""Kept detector choices: the audit's calibration, read back instead of retrained.

Choosing the audit's detector from a run (:func:`kgtracin.evaluation.calibration.calibrate`) costs one training
of the run's recipe. Its outcome depends only on the run (its manifest, final model and training triples), the
detectors compared, the planted fakes (kind, fraction, seed) and the TracIn loss and parameters: the
:func:`calibration_key`. So the outcome is kept, one small JSON file per key, and read back when the same choice
is asked for again (a second audit of the run, or its report).

The folder is ``$KGTRACIN_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/kgtracin``, else ``~/.cache/kgtracin``;
the files are in its ``calibrations/``. Nothing is written into the run's folder, which is an input. kgtracin
writes only files named by a key's digest, through a temporary file renamed into place, and replaces only a file
it wrote itself (recognised by :data:`FORMAT`). A file that cannot be read, or that holds another key, counts as
absent; a folder that cannot be written costs the keeping only (a warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ._version import __version__
from .config import AUDIT_LOSS, CalibrationConfig
from .staging import temporary_file

__all__ = ["calibration_key", "key_for", "cache_folder", "read_kept", "keep", "FORMAT"]

logger = logging.getLogger(__name__)

#: the ``format`` field of every file kept here
FORMAT = "kgtracin-calibration/1"

#: TracIn options not keyed as ``options``: the loss and parameters have fields of their own, and the others
#: change how the scores are computed, not what they are
_OWN_FIELD_OR_NEUTRAL = frozenset({"loss", "parameters", "method", "batch_size", "device", "progress"})


def cache_folder() -> Path:
    """Where kept calibrations live (the ``calibrations/`` folder of kgtracin's cache folder)."""
    root = os.environ.get("KGTRACIN_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "kgtracin") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "kgtracin")
    return Path(root) / "calibrations"


def run_digest(run) -> str | None:
    """SHA-256 of the run's manifest, final model file and training triples; ``None`` for a run without a folder.

    :param run: a :class:`~kgtracin.runs.Run`
    """
    if run.path is None:
        return None
    digest = hashlib.sha256()
    for name in ("manifest.json", "model.pt"):
        path = run.path / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    triples = run.training_triples.to(torch.int64).contiguous()
    digest.update(str(tuple(triples.shape)).encode())
    digest.update(triples.numpy().tobytes())
    return digest.hexdigest()


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
    return {
        "kgtracin": __version__,
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
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


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
    return chosen, {name: float(aucs[name]) for name in key["detectors"]}, path


def keep(key: dict | None, chosen: str, aucs: dict[str, float], folder: Path | None = None) -> Path | None:
    """Keep an outcome for ``key``; :return: the file, or ``None`` when it could not be kept (a warning says why)."""
    if key is None:
        return None
    path = _path(key, folder)
    if (path.exists() or path.is_symlink()) and _read(path) is None:
        logger.warning("calibration not kept: %s exists and was not written by kgtracin", path)
        return None
    record = {"format": FORMAT, "key": key, "chosen": chosen, "aucs": {k: float(v) for k, v in aucs.items()}}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_file(path)
        tmp.write_text(json.dumps(record, indent=1, allow_nan=True), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        logger.warning("calibration not kept in %s: %s", path.parent, error.strerror or error)
        return None
    return path
