"""Writing result files: TSV or JSONL by suffix, HTML; checked before any work, written atomically.

An output is checked before the computation starts (:func:`check_output`) and written through a temporary file
renamed into place (:func:`write_table`, :func:`write_text`), so a failure leaves no half-written file. kgtracin
overwrites an existing output only when it wrote it itself (an earlier result of kgtracin, recognised by its
header) or when it is empty; it never writes over one of the command's inputs. Missing parent folders are
created when the result is written.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .errors import KGTracinError
from .staging import apply_umask, ensure_folder, remove_created, temporary_file

__all__ = ["check_output", "check_new_folder", "write_table", "write_text", "check_not_input", "GENERATOR_TAG"]

FORMATS = {".tsv": "tsv", ".jsonl": "jsonl"}

#: the first columns of every table kgtracin writes (explain; self-influence and audit)
_TABLE_STARTS = (("test_index", "test_head"), ("rank", "head", "relation", "tail"))
#: the tag in the head of every HTML page kgtracin writes
GENERATOR_TAG = '<meta name="generator" content="kgtracin">'


def _written_by_kgtracin(path: Path) -> bool:
    """Whether an existing file is empty or one of kgtracin's own results (by its header)."""
    try:
        if path.stat().st_size == 0:
            return True
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    text = head.decode("utf-8", errors="replace")
    first = text.splitlines()[0] if text else ""
    if path.suffix.lower() == ".tsv":
        columns = tuple(first.split("\t"))
        return any(columns[: len(start)] == start for start in _TABLE_STARTS)
    if path.suffix.lower() == ".jsonl":
        return any(first.startswith(f'{{"{start[0]}":') for start in _TABLE_STARTS)
    return GENERATOR_TAG in text


def _check_name_lengths(path: Path) -> None:
    """Refuse a path with a part longer than the file system allows (before any stat, which would fail)."""
    limit = 255
    try:
        limit = os.pathconf(
            _existing_ancestor(Path(os.path.dirname(os.path.abspath(path))) or Path("/")), "PC_NAME_MAX"
        )
    except (OSError, ValueError):
        pass
    for part in Path(os.path.abspath(path)).parts:
        if len(os.fsencode(part)) > limit:
            raise KGTracinError(
                f"cannot write {path}: the name {part[:40]}... is longer than this file system "
                f"allows ({len(os.fsencode(part))} bytes, at most {limit})"
            )


def _existing_ancestor(path: Path) -> Path:
    current = path
    while current.parent != current:
        try:
            if current.exists():
                break
        except OSError:  # e.g. a name too long: look further up
            pass
        current = current.parent
    return current


def check_not_input(
    path: str | os.PathLike,
    files: Iterable[tuple[str, str | os.PathLike | None]] = (),
    folders: Iterable[tuple[str, str | os.PathLike | None]] = (),
) -> None:
    """Refuse an output that is one of the input files, or lies inside an input folder (such as the run directory).

    :param files: ``(what, path)`` pairs, e.g. ``("the test file", "q.tsv")``; ``None`` paths are skipped
    :param folders: ``(what, path)`` pairs of input folders, inside which nothing may be written
    :raises KGTracinError: naming the input the output would overwrite
    """
    target = os.path.realpath(path)
    for what, source in files:
        if source is not None and target == os.path.realpath(source):
            raise KGTracinError(f"output {path} would overwrite {what} ({source}); choose another output")
    for what, source in folders:
        if source is None:
            continue
        real = os.path.realpath(source).rstrip(os.sep) + os.sep
        if (target + os.sep).startswith(real):
            raise KGTracinError(f"output {path} would write inside {what} ({source}); choose another output")


def check_output(
    path: str | os.PathLike,
    suffixes: tuple[str, ...] = tuple(FORMATS),
    inputs: Iterable[tuple[str, str | os.PathLike | None]] = (),
    input_folders: Iterable[tuple[str, str | os.PathLike | None]] = (),
) -> Path:
    """Validate an output path before any work is done.

    :param suffixes: the accepted file endings
    :param inputs: the command's input files, ``(what, path)``: the output may not be one of them
    :param input_folders: the command's input folders (the run directory): the output may not lie inside one
    :raises KGTracinError: for an unknown suffix, a name too long, an unwritable folder, a directory or other
        non-file, an existing file kgtracin did not write, or an input
    """
    path = Path(path)
    if path.name.lower() in suffixes:
        raise KGTracinError(f"output {path} needs a name before its suffix, e.g. result{path.name}")
    if path.suffix.lower() not in suffixes:
        raise KGTracinError(f"output {path} must end in {' or '.join(suffixes)}")
    _check_name_lengths(path)
    if path.is_symlink():
        raise KGTracinError(
            f"output {path} is a symbolic link; give the file itself (kgtracin does not write through links)"
        )
    if path.is_dir():
        raise KGTracinError(f"output {path} is a directory")
    ancestor = _existing_ancestor(path.absolute().parent)
    if not ancestor.is_dir():
        raise KGTracinError(f"cannot write {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise KGTracinError(f"cannot write {path}: folder {ancestor} is not writable (permission denied)")
    check_not_input(path, inputs, input_folders)
    if path.exists() or path.is_symlink():
        try:
            mode = path.stat().st_mode
        except OSError as error:
            raise KGTracinError(f"cannot write {path}: {error.strerror}") from None
        if not stat.S_ISREG(mode):
            raise KGTracinError(f"output {path} exists and is not a regular file")
        if not os.access(path, os.W_OK):
            raise KGTracinError(f"cannot write {path}: permission denied")
        if not _written_by_kgtracin(path):
            raise KGTracinError(
                f"output {path} exists and was not written by kgtracin; remove it or choose "
                "another name (kgtracin overwrites only its own results)"
            )
    return path


def check_new_folder(output: Path) -> None:
    """Refuse an output folder that is a link, exists and is not empty, or whose nearest existing parent is not
    a writable folder."""
    if output.is_symlink():
        raise KGTracinError(f"output {output} is a symbolic link; give the folder itself")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise KGTracinError(f"output {output} already exists and is not an empty directory")
    ancestor = _existing_ancestor(output.absolute().parent)
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise KGTracinError(f"cannot write {output}: {ancestor} is not a writable folder")


def _alternative(path: Path) -> Path:
    number = 1
    while True:
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if not candidate.exists():
            return candidate
        number += 1


def _write_atomically(path: Path, write, suffixes: tuple[str, ...]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place; nothing is left behind
    on failure. If a file that kgtracin did not write appeared at ``path`` meanwhile, the result goes to
    ``NAME-1.SUFFIX`` instead and the error says so."""
    check_output(path, suffixes)
    given, path = path, Path(os.path.abspath(path))  # "new/../x.tsv" is x.tsv: "new" is never made
    created = ensure_folder(path.parent, str(given))
    tmp = None
    try:
        tmp = temporary_file(path)
        write(tmp)
        apply_umask(tmp)
        target = path
        if (path.exists() or path.is_symlink()) and not _written_by_kgtracin(path):
            target = _alternative(path)
        os.replace(tmp, target)
    except BaseException as error:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        remove_created(created)
        if isinstance(error, OSError):
            raise KGTracinError(f"cannot write {given}: {error.strerror or error}") from None
        raise
    if target != path:
        raise KGTracinError(
            f"output {given} appeared during the run and was not written by kgtracin; the result is in {target}"
        )
    return given


def write_table(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``frame`` as TSV or JSONL (by suffix) through a temporary file renamed into place."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise KGTracinError(f"output {path} must end in {' or '.join(FORMATS)}")
    if FORMATS[path.suffix.lower()] == "tsv":  # labels come from TSV files: no tab or newline to quote
        return _write_atomically(
            path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False, quoting=csv.QUOTE_NONE), tuple(FORMATS)
        )
    return _write_atomically(path, lambda tmp: _write_jsonl(frame, tmp), tuple(FORMATS))


def _write_jsonl(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """One JSON object per row, numbers written exactly (``json`` keeps every digit a float needs)."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in frame.to_dict(orient="records"):
            handle.write(
                json.dumps({k: v.item() if hasattr(v, "item") else v for k, v in record.items()}, ensure_ascii=False)
                + "\n"
            )


def write_text(text: str, path: str | os.PathLike, suffixes: tuple[str, ...] = (".html",)) -> Path:
    """Write a UTF-8 text file through a temporary file renamed into place."""
    return _write_atomically(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), suffixes)
