"""Every layer kind, registered by import. Adding a kind means adding one class in one module here."""

from . import activation, conv, dense, merge, norm, pool, recurrent, shape, split, transformer  # noqa: F401  (registration)
from .base import REGISTRY, Cost, LayerKind, LayerParams, Shape, ShapeError, TensorType, lookup

__all__ = ["REGISTRY", "Cost", "LayerKind", "LayerParams", "Shape", "ShapeError", "TensorType", "lookup"]
