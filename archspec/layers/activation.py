"""Element-wise activations and soft(arg)max. Each is its own kind, generated from one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field

from .base import Cost, LayerKind, LayerParams, NoParams, Shape, ShapeError, TensorType, numel


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


def _axis(p: AxisParams) -> int:
    """The per-sample axis `dim` on the batched tensor."""
    return p.dim + 1 if p.dim >= 0 else p.dim


def _clip(g: Any, low: float, high: float) -> str:
    import numpy as np

    return g.op("Clip", [g.x, g.const("min", np.array(low, np.float32)), g.const("max", np.array(high, np.float32))])


def _gelu(g: Any, p: GeluParams) -> str:
    """x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), or its tanh approximation (Hendrycks & Gimpel 2016 eq. 2);
    the Gelu operator from opset 20."""
    import numpy as np

    if g.opset >= 20:
        return g.op("Gelu", [g.x], approximate=p.approximate)
    half_x = g.op("Mul", [g.x, g.const("half", np.array(0.5, np.float32))])
    if p.approximate == "tanh":
        cube = g.op("Mul", [g.op("Mul", [g.x, g.x]), g.x])
        inner = g.op("Add", [g.x, g.op("Mul", [cube, g.const("c044715", np.array(0.044715, np.float32))])])
        t = g.op("Tanh", [g.op("Mul", [inner, g.const("sqrt2pi", np.array(np.sqrt(2 / np.pi), np.float32))])])
        return g.op("Mul", [half_x, g.op("Add", [t, g.const("one", np.array(1, np.float32))])])
    # x / sqrt 2 as a Div, not a Mul by 1/sqrt 2: onnxruntime's GeluFusion matches the Div form only and
    # then runs one Gelu kernel (BiasGelu with a preceding bias Add), as it does for opset 20's Gelu
    erf = g.op("Erf", [g.op("Div", [g.x, g.const("sqrt2", np.array(np.sqrt(2), np.float32))])])
    return g.op("Mul", [half_x, g.op("Add", [erf, g.const("one", np.array(1, np.float32))])])


# (name, params schema, flops per element, lowering from (torch.nn, params), ONNX from (emitter, params), doc)
_TABLE: list[tuple[str, type[LayerParams], int, Callable[[Any, Any], Any], Callable[[Any, Any], str], str]] = [
    ("relu", NoParams, 1, lambda nn, p: nn.ReLU(), lambda g, p: g.op("Relu", [g.x]), "max(x, 0)"),
    ("relu6", NoParams, 1, lambda nn, p: nn.ReLU6(), lambda g, p: _clip(g, 0.0, 6.0), "min(max(x, 0), 6)"),
    ("leaky_relu", LeakyParams, 1, lambda nn, p: nn.LeakyReLU(p.slope),
     lambda g, p: g.op("LeakyRelu", [g.x], alpha=p.slope), "x if x > 0 else slope*x"),
    ("sigmoid", NoParams, 1, lambda nn, p: nn.Sigmoid(), lambda g, p: g.op("Sigmoid", [g.x]), "1 / (1 + exp(-x))"),
    ("tanh", NoParams, 1, lambda nn, p: nn.Tanh(), lambda g, p: g.op("Tanh", [g.x]), "hyperbolic tangent"),
    ("gelu", GeluParams, 1, lambda nn, p: nn.GELU(approximate=p.approximate), _gelu,
     "x * Phi(x), exact erf form or (`approximate: tanh`) the tanh approximation"),
    ("silu", NoParams, 2, lambda nn, p: nn.SiLU(), lambda g, p: g.op("Mul", [g.x, g.op("Sigmoid", [g.x])]),
     "x * sigmoid(x), a.k.a. swish (Ramachandran et al. 2017)"),
    ("hardswish", NoParams, 3, lambda nn, p: nn.Hardswish(),
     lambda g, p: g.op("Mul", [g.x, g.op("HardSigmoid", [g.x], alpha=1 / 6, beta=0.5)]),
     "x * relu6(x + 3) / 6 (MobileNetV3, Howard et al. 2019)"),
    ("hardsigmoid", NoParams, 2, lambda nn, p: nn.Hardsigmoid(),
     lambda g, p: g.op("HardSigmoid", [g.x], alpha=1 / 6, beta=0.5), "relu6(x + 3) / 6 (MobileNetV3)"),
    ("mish", NoParams, 3, lambda nn, p: nn.Mish(),
     lambda g, p: g.op("Mul", [g.x, g.op("Tanh", [g.op("Softplus", [g.x])])]), "x * tanh(softplus(x)) (Misra 2019)"),
    ("softmax", AxisParams, 3, lambda nn, p: nn.Softmax(_axis(p)), lambda g, p: g.op("Softmax", [g.x], axis=_axis(p)),
     "exp(x) / sum(exp(x)) along `dim`"),
    ("log_softmax", AxisParams, 3, lambda nn, p: nn.LogSoftmax(_axis(p)),
     lambda g, p: g.op("LogSoftmax", [g.x], axis=_axis(p)), "log of softmax along `dim`, computed stably"),
]


def _make(name: str, params: type[LayerParams], per_element: int, build: Callable[[Any, Any], Any],
          to_onnx: Callable[[Any, Any], str], formula: str) -> type[LayerKind]:
    def infer(cls: type, p: Any, x: Shape) -> Shape:
        return _check_axis(p, x) if isinstance(p, AxisParams) else x

    def cost(cls: type, p: Any, x: Shape, y: Shape) -> Cost:
        return Cost(flops=per_element * numel(y))

    def lower(cls: type, p: Any, x: Shape, y: Shape) -> Any:
        from torch import nn

        return build(nn, p)

    def emit(cls: type, p: Any, x: Any, y: Any, g: Any) -> str:
        return to_onnx(g, p)

    attrs = {
        "name": name, "Params": params, "doc": f"Activation: {formula}.",
        "flops_rule": f"{per_element} per element (a counting convention, not a cycle count)",
        "example": {}, "infer": classmethod(infer), "cost": classmethod(cost), "lower": classmethod(lower),
        "emit": classmethod(emit),
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

    @classmethod
    def emit(cls, p: ScaleParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        return g.op("Mul", [g.x, g.const("factor", np.array(p.factor, np.float32))])  # as torch: x * float32(factor)
