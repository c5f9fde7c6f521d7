"""Element-wise activations and soft(arg)max. Each is its own kind, generated from one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field

from .base import Cost, LayerKind, LayerParams, NoParams, Shape, ShapeError, numel


class LeakyParams(LayerParams):
    slope: float = Field(0.01, ge=0)


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
    ("gelu", NoParams, 1, lambda nn, p: nn.GELU(), "x * Phi(x), exact erf form"),
    ("silu", NoParams, 2, lambda nn, p: nn.SiLU(), "x * sigmoid(x), a.k.a. swish (Ramachandran et al. 2017)"),
    ("hardswish", NoParams, 3, lambda nn, p: nn.Hardswish(), "x * relu6(x + 3) / 6 (MobileNetV3, Howard et al. 2019)"),
    ("hardsigmoid", NoParams, 2, lambda nn, p: nn.Hardsigmoid(), "relu6(x + 3) / 6 (MobileNetV3)"),
    ("mish", NoParams, 3, lambda nn, p: nn.Mish(), "x * tanh(softplus(x)) (Misra 2019)"),
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


class ScaleParams(LayerParams):
    factor: float


class Scale(LayerKind):
    name = "scale"
    Params = ScaleParams
    doc = ("Multiplies by a constant `factor`: the residual scaling of Inception-ResNet (Szegedy et al. 2017 "
           "§3.3: branches scaled by 0.1-0.3 before the addition stabilise training).")
    flops_rule = "1 per element"
    example = {"factor": 0.17}

    @classmethod
    def cost(cls, p: ScaleParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=numel(y))

    @classmethod
    def brief(cls, p: ScaleParams) -> str:
        return f"x{p.factor:g}"

    @classmethod
    def lower(cls, p: ScaleParams, x: Shape, y: Shape):
        from ..nn import Scale as TorchScale

        return TorchScale(p.factor)
