"""Every layer kind, registered by import. Adding a kind means adding one class in one module here."""

from . import activation, conv, dense, norm, pool, recurrent  # noqa: F401  (registration)
from .base import REGISTRY, Cost, LayerKind, LayerParams, Shape, ShapeError, TensorType, lookup
from .merge import MERGES

__all__ = ["MERGES", "REGISTRY", "Cost", "LayerKind", "LayerParams", "Shape", "ShapeError", "TensorType", "lookup"]
