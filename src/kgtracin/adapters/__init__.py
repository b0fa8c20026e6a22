"""Adapters: what kgtracin needs from a model (the per-triple loss and its parameters)."""

from .pykeen import ModelAdapter, select_parameters

__all__ = ["ModelAdapter", "select_parameters"]
