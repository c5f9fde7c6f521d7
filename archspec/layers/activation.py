"""Element-wise activations and soft(arg)max. Each is its own kind, generated from one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from .base import Cost, LayerKind, LayerParams, NoParams, Shape, ShapeError, numel


class LeakyParams(LayerParams):
    slope: float = Field(0.01, ge=0)


class GeluParams(LayerParams):
    approximate: Literal["none", "tanh"] = Field(
        "none", description="none: x * Phi(x) with the exact erf; tanh: Hendrycks & Gimpel 2016 eq. 2, "
        "0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))), as nn.GELU(approximate='tanh')")


class AxisParams(LayerParams):
    dim: int = -1  # per-sample axis; -1 is the last


def _check_axis(p: AxisParams, x: Shape) -> Shape:
    if not -len(x) <= p.dim < len(x):
        raise ShapeError(f"dim={p.dim} is out of range for a rank-{len(x)} input", "dim")
    return x


# (name, params schema, flops per element, lowering from (torch.nn, params), doc)
_TABLE: list[tuple[str, type[LayerParams], int, Callable[[Any, Any], Any], str]] = [
    ("relu", NoParams, 1, lambda nn, p: nn.ReLU(), "max(x, 0)"),
    ("relu6", NoParams, 1, lambda nn, p: nn.ReLU6(), "min(max(x, 0), 6)"),
    ("leaky_relu", LeakyParams, 1, lambda nn, p: nn.LeakyReLU(p.slope), "x if x > 0 else slope*x"),
    ("sigmoid", NoParams, 1, lambda nn, p: nn.Sigmoid(), "1 / (1 + exp(-x))"),
    ("tanh", NoParams, 1, lambda nn, p: nn.Tanh(), "hyperbolic tangent"),
    ("gelu", GeluParams, 1, lambda nn, p: nn.GELU(approximate=p.approximate),
     "x * Phi(x), exact erf form or (`approximate: tanh`) the tanh approximation"),
    ("softmax", AxisParams, 3, lambda nn, p: nn.Softmax(p.dim + 1 if p.dim >= 0 else p.dim),
     "exp(x) / sum(exp(x)) along `dim`"),
    ("log_softmax", AxisParams, 3, lambda nn, p: nn.LogSoftmax(p.dim + 1 if p.dim >= 0 else p.dim),
     "log of softmax along `dim`, computed stably"),
]


def _make(name: str, params: type[LayerParams], per_element: int, build: Callable[[Any, Any], Any],
          formula: str) -> type[LayerKind]:
    def infer(cls: type, p: Any, x: Shape) -> Shape:
        return _check_axis(p, x) if isinstance(p, AxisParams) else x

    def cost(cls: type, p: Any, x: Shape, y: Shape) -> Cost:
        return Cost(flops=per_element * numel(y))

    def lower(cls: type, p: Any, x: Shape, y: Shape) -> Any:
        from torch import nn

        return build(nn, p)

    attrs = {
        "name": name, "Params": params, "doc": f"Activation: {formula}.",
        "flops_rule": f"{per_element} per element (a counting convention, not a cycle count)",
        "example": {}, "infer": classmethod(infer), "cost": classmethod(cost), "lower": classmethod(lower),
    }
    return type(name.title().replace("_", ""), (LayerKind,), attrs)


ACTIVATIONS = {row[0]: _make(*row) for row in _TABLE}
