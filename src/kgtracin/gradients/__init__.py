"""Gradient computers: ``loop`` (reference), ``vmap`` (torch.func) and ``fast`` (exact closed form)."""

from ..errors import KGTracinError
from ._factors import DenseGroup, Features, OuterGroup, RowGroup
from .base import GradientComputer
from .fast import FastComputer
from .loop import LoopComputer
from .projection import Projection
from .vmap import VmapComputer

__all__ = [
    "GradientComputer",
    "LoopComputer",
    "VmapComputer",
    "FastComputer",
    "Features",
    "DenseGroup",
    "RowGroup",
    "OuterGroup",
    "Projection",
    "make_computer",
]

_COMPUTERS = {cls.name: cls for cls in (FastComputer, VmapComputer, LoopComputer)}


def make_computer(method: str, projection: Projection | None = None) -> GradientComputer:
    """The gradient computer for a method name (``fast``, ``vmap`` or ``loop``).

    :param projection: opt-in approximate sketch of the dense factors; ``fast`` only
    """
    if method not in _COMPUTERS:
        raise KGTracinError(f"unknown method {method!r}; choose one of {', '.join(_COMPUTERS)}")
    if projection is None:
        return _COMPUTERS[method]()
    if method != FastComputer.name:
        raise KGTracinError(f"a projection applies to method 'fast' only, not {method!r}")
    return FastComputer(projection)
