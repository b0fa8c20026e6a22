"""Runners: compose a :class:`~kgtracin.scoring.Scorer` over training shards, processes and a resumable store."""

from __future__ import annotations

import logging
import math

import torch
from tqdm.auto import tqdm

from ..scoring import Scorer, TopKSink
from .distributed import all_gather_objects, world
from .store import ShardStore, StoreFolder, remove_store

__all__ = ["sharded_topk", "ShardStore", "StoreFolder", "remove_store", "world"]

logger = logging.getLogger(__name__)


def sharded_topk(
    scorer: Scorer,
    train: torch.Tensor,
    test: torch.Tensor,
    k: int,
    dtype: torch.dtype,
    shard_size: int,
    store: ShardStore | None = None,
) -> TopKSink:
    """Top-k proponents and opponents over all training triples, shard by shard.

    Shard ``s`` covers training triples ``s * shard_size .. (s + 1) * shard_size``. Under torch.distributed,
    rank ``r`` of ``W`` computes shards ``s`` with ``s % W == r`` and the ranks' results are merged on every
    rank. With a store, finished shards are saved and skipped when the same work runs again. The merge is
    deterministic, so the result does not depend on the number of processes or on interruptions.

    :param train: shape: (N, 3), dtype: long
    :param test: shape: (M, 3), dtype: long
    """
    rank, size = world()
    num_shards = math.ceil(train.shape[0] / shard_size)
    mine = [s for s in range(num_shards) if s % size == rank]
    todo = [s for s in mine if store is None or not store.done(s)]
    if store is not None and len(todo) < len(mine):
        logger.warning("resuming from %s: %d of %d shard(s) already done", store.path, len(mine) - len(todo), len(mine))
    result = TopKSink(test.shape[0], k, dtype)
    for shard in mine:
        if shard in todo:
            continue
        try:
            result.merge(TopKSink.from_state(store.load(shard), k))
        except FileNotFoundError:
            todo.append(shard)
    if todo:
        tests = scorer.prepare(test)
        bar = tqdm(
            sorted(todo),
            desc=f"shards (rank {rank})" if size > 1 else "shards",
            unit="shard",
            disable=not scorer.progress or len(todo) < 2,
            leave=False,
        )
        for shard in bar:
            lo, hi = shard * shard_size, min(train.shape[0], (shard + 1) * shard_size)
            part = TopKSink(test.shape[0], k, dtype)
            scorer.run_range(train[lo:hi], tests, part, offset=lo, desc=f"shard {shard}")
            if store is not None:
                store.save(shard, part.state())
            result.merge(part)
    if size > 1:
        merged = TopKSink(test.shape[0], k, dtype)
        for state in all_gather_objects(result.state()):
            merged.merge(TopKSink.from_state(state, k))
        result = merged
    return result
