"""What kgtracin writes on the way to a result, and the only things it ever deletes.

kgtracin never deletes or overwrites a file or folder that it did not create. Everything it makes on the way to
a result carries proof that it made it:

* **Staging folders** (a run being trained, an evaluation being written) are hidden folders beside the target,
  named ``.NAME.XXXX.kgtracin-partial``, holding an owner file :data:`OWNER` (JSON: the process id, its start
  time and the host) written before anything else. A staging folder whose process has died (``kill -9``, a
  power cut) is stale: the next kgtracin command that writes beside it removes it. A folder without the owner
  file is never removed.
* **Temporary files** (a table being written) are named ``.NAME.kgtracin-PID-XXXX.tmp`` and renamed into place
  when complete; a stale one (its process gone) is removed by the next write of the same output.

Results are published with the permissions the user's umask gives a new file or folder (``mkstemp`` and
``mkdtemp`` make them private).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from .errors import KGTracinError

__all__ = [
    "keep_file",
    "OWNER",
    "make_staging",
    "publish_folder",
    "sweep_stale",
    "apply_umask",
    "temporary_file",
    "owner_record",
    "is_alive",
    "short_name",
    "ensure_folder",
    "remove_created",
]

logger = logging.getLogger(__name__)

#: the owner file inside every staging folder and store kgtracin makes
OWNER = ".kgtracin-owner"
_PARTIAL = ".kgtracin-partial"


def short_name(name: str, limit: int = 80) -> str:
    """A prefix of ``name`` short enough that kgtracin's hidden names stay within the file system's limit."""
    return name if len(name) <= limit else name[:limit]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, directory: bool = False) -> None:
    """Give ``path`` the mode a new file (0666) or folder (0777) gets under the user's umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused process id apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_record() -> dict:
    """Who is writing: this process's id, start time and host."""
    return {"pid": os.getpid(), "start": _start_time(os.getpid()), "host": socket.gethostname()}


def is_alive(owner: dict) -> bool:
    """Whether the process an owner record names still runs (True when that cannot be known: another host)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = owner.get("start")
    return start is None or _start_time(pid) in (None, start)


def _read_owner(folder: Path) -> dict | None:
    try:
        return json.loads((folder / OWNER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sweep_stale(parent: Path, name: str) -> None:
    """Remove the stale staging folders and temporary files kgtracin left for ``name`` in ``parent``.

    Only folders holding kgtracin's owner file and files with kgtracin's temporary name are considered, and only
    those whose process has died are removed.
    """
    prefix = f".{short_name(name)}."
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        if entry.name.endswith(_PARTIAL) and entry.is_dir() and not entry.is_symlink():
            owner = _read_owner(entry)
            if owner is not None and not is_alive(owner):
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.endswith(".tmp") and ".kgtracin-" in entry.name and entry.is_file():
            pid = entry.name.rsplit(".kgtracin-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and not is_alive({"pid": int(pid), "host": socket.gethostname()}):
                entry.unlink(missing_ok=True)


def make_staging(parent: Path, name: str) -> Path:
    """A new hidden staging folder for ``name`` in ``parent``, owned by this process (stale ones are swept)."""
    sweep_stale(parent, name)
    staging = Path(tempfile.mkdtemp(prefix=f".{short_name(name)}.", suffix=_PARTIAL, dir=parent))
    (staging / OWNER).write_text(json.dumps(owner_record()), encoding="utf-8")
    return staging


def publish_folder(staging: Path, target: Path) -> None:
    """Rename a finished staging folder to ``target`` (absent, or an empty folder), with the umask's mode.

    :raises FileExistsError: when ``target`` exists and is not empty (it appeared while kgtracin worked)
    """
    (staging / OWNER).unlink(missing_ok=True)
    for path in staging.rglob("*"):
        apply_umask(path, directory=path.is_dir())
    apply_umask(staging, directory=True)
    if target.is_dir() and not target.is_symlink():
        try:
            target.rmdir()
        except OSError:
            raise FileExistsError(str(target)) from None
    elif target.exists() or target.is_symlink():
        raise FileExistsError(str(target))
    os.rename(staging, target)


def temporary_file(path: Path) -> Path:
    """A new temporary file beside ``path``, named so that a stale one can be told from the user's files."""
    sweep_stale(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{short_name(path.name)}.kgtracin-{os.getpid()}-", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    return Path(tmp)


def keep_file(path: Path, write, is_own, what: str) -> Path | None:
    """Write a kept file (a cache entry) at ``path``: ``write(tmp)`` fills a temporary file beside it, renamed into
    place. Only a regular file that ``is_own(path)`` recognises as kgtracin's is replaced, never a link or a file of
    the user's.

    :param what: what is kept, for the warning
    :return: ``path``, or ``None`` when it could not be kept (a warning says why)
    """
    tmp = None
    try:
        if os.path.lexists(path) and (path.is_symlink() or not is_own(path)):
            logger.warning("%s not kept: %s exists and is not a file kgtracin wrote", what, path)
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_file(path)
        write(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        logger.warning("%s not kept in %s: %s", what, path.parent, getattr(error, "strerror", None) or error)
        return None
    return path


def ensure_folder(folder: Path, what: str) -> list[Path]:
    """Create ``folder`` and its missing parents; :return: the folders created, outermost first.

    :raises KGTracinError: when a parent is a file or cannot be written
    """
    folder = Path(os.path.normpath(os.path.abspath(folder)))  # "new/../x" must not create "new"
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    if not current.is_dir():
        raise KGTracinError(f"cannot write {what}: {current} is not a folder")
    if missing and not os.access(current, os.W_OK | os.X_OK):
        raise KGTracinError(f"cannot write {what}: folder {current} is not writable")
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as error:
            remove_created(created)
            raise KGTracinError(f"cannot create folder {path} for {what}: {error.strerror}") from None
        created.append(path)
    return created


def remove_created(folders: list[Path]) -> None:
    """Remove folders :func:`ensure_folder` created, innermost first, where they are still empty."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            return
