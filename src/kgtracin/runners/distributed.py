"""torch.distributed (torchrun) support: which shards a rank takes, and merging the ranks' results."""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

__all__ = ["world", "init_from_env", "all_gather_objects", "local_device", "barrier"]

logger = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: str | None) -> str | None:
    """Under torchrun, put each rank on its own GPU (``cuda`` -> ``cuda:LOCAL_RANK``)."""
    if device is not None and device.startswith("cuda") and ":" not in device and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def init_from_env(device: str | None = None) -> bool:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses NCCL for CUDA devices and gloo otherwise. :return: whether a group with more than one process exists
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device is not None and device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        logger.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_world_size() > 1


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (CPU tensors travel as pickled objects)."""
    _rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (nothing outside a process group)."""
    if world()[1] > 1:
        dist.barrier()
