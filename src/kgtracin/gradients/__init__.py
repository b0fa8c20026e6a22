"""Gradient computers: ``loop`` (reference), ``vmap`` (torch.func) and ``fast`` (exact closed form)."""

from ..errors import KGTracinError
from ._factors import DenseGroup, Features, OuterGroup, RowGroup
from .base import GradientComputer
from .fast import FastComputer
from .loop import LoopComputer
from .vmap import VmapComputer

__all__ = [
    "GradientComputer", "LoopComputer", "VmapComputer", "FastComputer", "Features",
    "DenseGroup", "RowGroup", "OuterGroup", "make_computer",
]

_COMPUTERS = {cls.name: cls for cls in (FastComputer, VmapComputer, LoopComputer)}


def make_computer(method: str) -> GradientComputer:
    """The gradient computer for a method name (``fast``, ``vmap`` or ``loop``)."""
    try:
        return _COMPUTERS[method]()
    except KeyError:
        raise KGTracinError(f"unknown method {method!r}; choose one of {', '.join(_COMPUTERS)}") from None
