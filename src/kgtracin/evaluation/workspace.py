"""A resumable evaluation folder: finished steps are kept as files, so an interrupted evaluation goes on.

The folder holds a marker file :data:`MARKER` (JSON: what the evaluation measures, as a fingerprint) written
before anything else. Rerunning the same command with the same ``--output`` finds the marker, checks that the
fingerprint is the same, and reads back every finished step instead of recomputing it. kgtracin writes into
such a folder only when the marker is there (or the folder is new or empty), and never deletes anything in it:
each step is one JSON file, written aside and renamed into place, so a step is either whole or absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import KGTracinError
from ..staging import apply_umask, temporary_file

__all__ = ["MARKER", "Workspace"]

#: the marker file of a resumable evaluation folder
MARKER = ".kgtracin-evaluation.json"


class Workspace:
    """An evaluation folder whose finished steps survive an interruption.

    :param folder: new, empty, or one this same evaluation began
    :param fingerprint: JSON-able description of what is measured; a folder begun with another one is refused
    :raises KGTracinError: for a folder that holds other files, or another evaluation
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: dict):
        self.folder = Path(folder)
        marker = self.folder / MARKER
        if self.folder.exists() and not self.folder.is_dir():
            raise KGTracinError(f"output {self.folder} exists and is not a folder; choose another output")
        if marker.is_file():
            try:
                held = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise KGTracinError(f"{marker} is unreadable; give a new --output") from None
            if held != fingerprint:
                raise KGTracinError(
                    f"output {self.folder} holds an evaluation with other settings (run, predictions, k, variants "
                    "or seed); give a new --output, or the same options to resume it"
                )
            self.resumed = True
            return
        if self.folder.exists() and any(self.folder.iterdir()):
            raise KGTracinError(
                f"output {self.folder} exists and is not empty, and is not an evaluation kgtracin began; nothing "
                "was written there; choose a new folder"
            )
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise KGTracinError(f"cannot create {self.folder}: {error.strerror or error}") from None
        self.resumed = False
        self.write(MARKER, fingerprint)

    def read(self, name: str) -> dict | None:
        """A finished step's record, or None when the step has not finished."""
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise KGTracinError(f"{path} is unreadable; give a new --output") from None

    def write(self, name: str, record: dict | str) -> Path:
        """Write a step's record (JSON, or text as it is) whole: aside, then renamed into place."""
        path = self.folder / name
        tmp = temporary_file(path)
        try:
            text = record if isinstance(record, str) else json.dumps(record, indent=1)
            tmp.write_text(text, encoding="utf-8")
            apply_umask(tmp)
            os.replace(tmp, path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise KGTracinError(f"cannot write {path}: {error.strerror or error}") from None
        return path
