"""A resumable on-disk store of partial top-k results, one file per training shard."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import KGTracinError

__all__ = ["ShardStore"]

logger = logging.getLogger(__name__)

_META = "store.json"


class ShardStore:
    """Partial results keyed by training shard, valid only for one fingerprint of the work.

    A shard's file is written to a temporary name and renamed, so a killed process leaves either a
    complete shard or none. Opening a store whose fingerprint differs from the work's clears it.

    :param path: the store folder (created if needed)
    :param fingerprint: identifies the work (model, checkpoints, triples, options)
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict):
        self.path = Path(path)
        self.fingerprint = fingerprint
        meta = self.path / _META
        if meta.is_file():  # the folder is only created when the first shard is saved
            try:
                stored = json.loads(meta.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                stored = None
            if stored != fingerprint:
                logger.warning("store %s was made for other work; starting afresh", self.path)
                self._clear_shards()
                self._write_meta()
        elif self.path.exists() and not self.path.is_dir():
            raise KGTracinError(f"store {self.path} exists and is not a folder")

    def _write_meta(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".store.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.fingerprint, handle, sort_keys=True)
        os.replace(tmp, self.path / _META)

    def _clear_shards(self) -> None:
        for file in self.path.glob("shard_*.pt"):
            file.unlink()

    def _file(self, shard: int) -> Path:
        return self.path / f"shard_{shard:06d}.pt"

    def done(self, shard: int) -> bool:
        return self._file(shard).is_file()

    def load(self, shard: int) -> dict[str, torch.Tensor]:
        try:
            return torch.load(self._file(shard), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged shard is recomputed
            logger.warning("shard %d of store %s is damaged; recomputing it", shard, self.path)
            self._file(shard).unlink(missing_ok=True)
            raise FileNotFoundError(shard) from None

    def save(self, shard: int, state: dict[str, torch.Tensor]) -> None:
        try:
            if not (self.path / _META).is_file():
                self.path.mkdir(parents=True, exist_ok=True)
                self._write_meta()
        except OSError as error:
            raise KGTracinError(f"cannot write the store {self.path}: {error.strerror}") from None
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=f".shard_{shard:06d}.", suffix=".tmp")
        os.close(fd)
        torch.save(state, tmp)
        os.replace(tmp, self._file(shard))

    @staticmethod
    def remove_folder(path: str | os.PathLike) -> None:
        """Delete a store once its result is safely written."""
        shutil.rmtree(path, ignore_errors=True)
