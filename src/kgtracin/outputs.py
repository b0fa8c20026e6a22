"""Writing result tables: TSV or JSONL by suffix, atomically (temporary file, then rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from .errors import KGTracinError

__all__ = ["check_output", "write_table", "write_text"]

FORMATS = {".tsv": "tsv", ".jsonl": "jsonl"}


def check_output(path: str | os.PathLike, suffixes: tuple[str, ...] = tuple(FORMATS)) -> Path:
    """Validate an output path before any work is done.

    :param suffixes: the accepted file endings
    :raises KGTracinError: for an unknown suffix, a missing or unwritable folder, or a directory path
    """
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise KGTracinError(f"output {path} must end in {' or '.join(suffixes)}")
    if path.is_dir():
        raise KGTracinError(f"output {path} is a directory")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise KGTracinError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise KGTracinError(f"cannot write {path}: permission denied")
    return path


def _write_atomically(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place; nothing is left behind
    on failure."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.absolute().parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise KGTracinError(f"cannot write {path}: {error.strerror}") from None
        raise
    return path


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` as TSV or JSONL (by suffix) through a temporary file renamed into place."""
    path = check_output(path)
    if FORMATS[path.suffix.lower()] == "tsv":
        return _write_atomically(path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False))
    return _write_atomically(path, lambda tmp: frame.to_json(tmp, orient="records", lines=True, force_ascii=False))


def write_text(text: str, path: str | os.PathLike, suffixes: tuple[str, ...] = (".html",)) -> Path:
    """Write a UTF-8 text file through a temporary file renamed into place."""
    path = check_output(path, suffixes)
    return _write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
