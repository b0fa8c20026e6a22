"""kgtracin: exact, fast TracIn influence for PyKEEN knowledge-graph embedding models.

The public classes are imported on first use, so that ``kgtracin --help`` starts without loading torch and PyKEEN.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__
from .errors import KGTracinError

if TYPE_CHECKING:
    from .callbacks import CheckpointCallback
    from .checkpoints import Checkpoint
    from .config import TracInConfig
    from .results import InfluenceResult, TopK
    from .runners.store import remove_store
    from .tracin import TracIn
    from .triples import Labels

__all__ = [
    "TracIn",
    "TracInConfig",
    "Checkpoint",
    "CheckpointCallback",
    "InfluenceResult",
    "TopK",
    "Labels",
    "KGTracinError",
    "remove_store",
]

_LAZY = {
    "TracIn": "tracin",
    "Checkpoint": "checkpoints",
    "CheckpointCallback": "callbacks",
    "InfluenceResult": "results",
    "TopK": "results",
    "Labels": "triples",
    "TracInConfig": "config",
    "remove_store": "runners.store",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
