"""A resumable on-disk store of partial top-k results, one file per training shard.

A store is a folder that kgtracin owns: it holds the owner file :data:`~kgtracin.staging.OWNER`, written when the
store is opened, before any shard. kgtracin opens a folder as a store only when it is new, empty, or already a
store, and removes only a store's own files (and the folder itself only when kgtracin created it and nothing
else is left in it). One process at a time may use a store: a second one is refused in one line.

Layout::

    .kgtracin-owner          who made the store, and whether it made the folder
    .lock-rank-R             held (flock) by the process of torch.distributed rank R while it works
    store.json               the fingerprint of the work (one test block), or
    test_block_NNNNN/        one sub-store per test block when the test triples come in several blocks
        store.json
        shard_NNNNNN.pt      a finished shard: its top-k state and the fingerprint digest it belongs to
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import torch

from ..errors import KGTracinError
from ..staging import OWNER, owner_record

__all__ = ["ShardStore", "StoreFolder", "remove_store", "fingerprint", "with_test"]

logger = logging.getLogger(__name__)

_META = "store.json"
_BLOCK_PREFIX = "test_block_"
STORE_FORMAT = "kgtracin-store/1"


def _tensor_digest(*tensors: torch.Tensor) -> str:
    """SHA-1 of the tensors' bytes, tensor by tensor (no copy of a whole model)."""
    sha = hashlib.sha1()
    for tensor in tensors:
        sha.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _checkpoint_id(checkpoint) -> list:
    """A checkpoint by content (a file replaced in place is other work) and learning rate."""
    if isinstance(checkpoint.state, (str, os.PathLike)):
        sha = hashlib.sha1()
        with open(checkpoint.state, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                sha.update(chunk)
        return [sha.hexdigest(), checkpoint.learning_rate]
    return [_tensor_digest(*checkpoint.state.values()), checkpoint.learning_rate]


def fingerprint(
    *, model, config, parameters: list[str], k: int, train: torch.Tensor, test: torch.Tensor | None, checkpoints
) -> dict:
    """What identifies a top-k computation: a shard made for other work is recomputed.

    :param config: the :class:`~kgtracin.config.TracInConfig`
    :param train: shape: (N, 3)
    :param test: shape: (M, 3), the test block; ``None`` leaves ``"test"`` out, for :func:`with_test` to add per
        block (the checkpoint files and the training triples are then hashed once, not once per block)
    :param checkpoints: the :class:`~kgtracin.checkpoints.Checkpoint` s
    """
    from .._version import __version__

    identity = {
        "kgtracin": __version__,
        "model": type(model).__name__,
        "k": k,
        "method": config.method,
        "parameters": parameters,
        "batch_size": config.effective_batch_size,
        "shard_size": config.shard_size,
        "precision": config.precision,
        "loss": config.loss,
        "normalize": config.normalize,
        "projection": [config.projection_dim, config.projection_seed],
        "train": _tensor_digest(train),
        "checkpoints": [_checkpoint_id(c) for c in checkpoints],
    }
    return identity if test is None else with_test(identity, test)


def with_test(identity: dict, test: torch.Tensor) -> dict:
    """A :func:`fingerprint` made without a test block, completed with one. :param test: shape: (M, 3)"""
    return {**identity, "test": _tensor_digest(test)}


def _digest(fingerprint: dict) -> str:
    return hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def _is_store(path: Path) -> bool:
    try:
        return json.loads((path / OWNER).read_text(encoding="utf-8")).get("format") == STORE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class StoreFolder:
    """The folder of a store, opened for this process: checked, marked as kgtracin's, and locked.

    :param path: a new folder, an empty one, or an existing kgtracin store
    :param rank: the torch.distributed rank (each rank holds its own lock)
    :raises KGTracinError: when the folder holds other files, or another process uses the store
    """

    def __init__(self, path: str | os.PathLike, rank: int = 0):
        self.path = Path(os.path.abspath(path))  # "new/../store" must not create "new"
        if self.path.is_symlink():
            raise KGTracinError(f"store {self.path} is a symbolic link; give the folder itself")
        if self.path.exists() and not self.path.is_dir():
            raise KGTracinError(f"store {self.path} exists and is not a folder")
        if self.path.is_dir() and not _is_store(self.path):
            try:
                foreign = any(not p.name.startswith((OWNER, f".{OWNER}", ".lock-rank-")) for p in self.path.iterdir())
            except OSError as error:
                raise KGTracinError(f"cannot read the store {self.path}: {error.strerror}") from None
            if foreign:
                raise KGTracinError(
                    f"store {self.path} is a folder with other files in it, not a kgtracin store; "
                    "give a new or empty folder"
                )
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not _is_store(self.path):
                record = dict(owner_record(), format=STORE_FORMAT, created_folder=created)
                tmp = self.path / f".{OWNER}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(record), encoding="utf-8")
                os.replace(tmp, self.path / OWNER)
            self._lock = open(self.path / f".lock-rank-{rank}", "a+")  # noqa: SIM115 - held until close()
        except OSError as error:
            raise KGTracinError(f"cannot write the store {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise KGTracinError(
                f"store {self.path} is in use by another kgtracin process; wait for it to end, or "
                "give another --store (or --output)"
            ) from None

    def block(self, index: int | None, fingerprint: dict) -> ShardStore:
        """The store of one test block (``None``: the only block, kept in the folder itself).

        Under torch.distributed, rank 0 checks the block's fingerprint (clearing shards made for other work) and
        the other ranks wait for it; each rank then writes only its own shards.
        """
        from .distributed import barrier, world

        folder = self.path if index is None else self.path / f"{_BLOCK_PREFIX}{index:05d}"
        rank, size = world()
        if rank == 0:
            ShardStore.prepare(folder, fingerprint)
        if size > 1:
            barrier()
        return ShardStore(folder, fingerprint, rank)

    def close(self) -> None:
        """Release the lock."""
        self._lock.close()


class ShardStore:
    """Partial results keyed by training shard, valid only for one fingerprint of the work.

    A shard's file is written to a temporary name and renamed, so a killed process leaves either a complete
    shard or none; a leftover temporary file is removed when the store is next opened. A store whose fingerprint
    differs from the work's is cleared (:meth:`prepare`), and a shard saved for other work is never loaded.

    :param path: the folder (inside a :class:`StoreFolder`, which holds the lock), already prepared
    :param fingerprint: identifies the work (model, checkpoints, triples, options)
    :param rank: the torch.distributed rank writing through this object
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict, rank: int = 0):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.digest = _digest(fingerprint)
        self.rank = rank
        try:
            for tmp in self.path.glob(f".shard_*.rank{rank}.tmp"):  # left by this rank's killed predecessor
                tmp.unlink()
        except OSError as error:
            raise KGTracinError(f"cannot write the store {self.path}: {error.strerror}") from None

    @staticmethod
    def prepare(path: Path, fingerprint: dict) -> None:
        """Make the folder and make it hold ``fingerprint``'s work: shards of other work are deleted."""
        meta = path / _META
        try:
            path.mkdir(exist_ok=True)
            stored = None
            if meta.is_file():
                try:
                    stored = json.loads(meta.read_text(encoding="utf-8"))
                except (ValueError, UnicodeDecodeError):
                    stored = None
            if stored != fingerprint:
                if meta.is_file():
                    logger.warning("store %s was made for other work; starting afresh", path)
                for file in path.glob("shard_*.pt"):
                    file.unlink()
                tmp = path / ".store.tmp"
                tmp.write_text(json.dumps(fingerprint, sort_keys=True), encoding="utf-8")
                os.replace(tmp, meta)
        except OSError as error:
            raise KGTracinError(f"cannot write the store {path}: {error.strerror}") from None

    def _file(self, shard: int) -> Path:
        return self.path / f"shard_{shard:06d}.pt"

    def done(self, shard: int) -> bool:
        return self._file(shard).is_file()

    def load(self, shard: int) -> dict[str, torch.Tensor]:
        """A finished shard's state. :raises FileNotFoundError: when it is damaged or was saved for other work"""
        try:
            saved = torch.load(self._file(shard), map_location="cpu", weights_only=True)
            if saved["fingerprint"] != self.digest:
                raise ValueError("other work")
            return saved["state"]
        except Exception:
            logger.warning("shard %d of store %s is damaged or from other work; recomputing it", shard, self.path)
            self._file(shard).unlink(missing_ok=True)
            raise FileNotFoundError(shard) from None

    def save(self, shard: int, state: dict[str, torch.Tensor]) -> None:
        tmp = self.path / f".shard_{shard:06d}.rank{self.rank}.tmp"
        buffer = io.BytesIO()  # serialised in memory, so that a full disk is an OSError with its reason
        torch.save({"fingerprint": self.digest, "state": state}, buffer)
        try:
            with open(tmp, "wb") as handle:
                handle.write(buffer.getbuffer())
            os.replace(tmp, self._file(shard))
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise KGTracinError(f"cannot write the store {self.path}: {error.strerror}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _remove_own_files(folder: Path) -> None:
    for pattern in (_META, "shard_*.pt", ".shard_*.tmp", ".store.tmp", ".lock-rank-*", f".{OWNER}.*.tmp"):
        for file in folder.glob(pattern):
            if file.is_file() and not file.is_symlink():
                file.unlink(missing_ok=True)


def remove_store(path: str | os.PathLike, unless_resumable: bool = False) -> None:
    """Delete a store once its result is safely written: only the files kgtracin wrote in it, and the folder
    only when kgtracin created it and nothing else is in it. A folder that is not a kgtracin store is left alone.

    :param unless_resumable: keep a store that holds finished shards (after a failure, for the re-run)
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink() or not _is_store(path):
        return
    if unless_resumable and any(path.rglob("shard_*.pt")):
        return
    created = json.loads((path / OWNER).read_text(encoding="utf-8")).get("created_folder") is True
    for block in path.glob(f"{_BLOCK_PREFIX}*"):
        if block.is_dir() and not block.is_symlink():
            _remove_own_files(block)
            try:
                block.rmdir()
            except OSError:
                pass
    _remove_own_files(path)
    (path / OWNER).unlink(missing_ok=True)
    if created:
        try:
            path.rmdir()
        except OSError:
            logger.warning("store %s holds files kgtracin did not write; left in place", path)
