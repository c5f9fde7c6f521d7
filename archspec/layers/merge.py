"""The N-ary kinds: channel/feature concatenation (Inception, DenseNet, multi-input heads) and
element-wise addition (ResNet). Written as branches (`concat: {b1: [...], b2: [...]}`) or over
named values (`- {concat, from: [stage2, stage4]}`); both become one node of these kinds."""

from __future__ import annotations

from typing import Any

from .base import Cost, LayerKind, NoParams, Shape, ShapeError, TensorType, numel


def concat_axis(t: TensorType) -> int:
    """Per-sample axis joined: channels of an image (C), features of a sequence or vector (F)."""
    axes = t.axes
    return axes.index("C") if "C" in axes else axes.index("F") if "F" in axes else 0


class Concat(LayerKind):
    name = "concat"
    Params = NoParams
    arity = None
    example: dict[str, Any] = {}
    doc = "Concatenates its inputs along channels (images) or features (sequences, vectors); the other axes must agree."
    input_desc = "two or more tensors of one layout"
    shape_rule = "the joined axis sums; every other axis must be equal"
    flops_rule = "0 (a copy)"

    @classmethod
    def output_types(cls, p: Any, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        first = xs[0]
        axis = concat_axis(first)
        what = "channels" if first.axes[axis] == "C" else "features"
        for i, x in enumerate(xs[1:], 1):
            if x.axes != first.axes or x.shape[:axis] + x.shape[axis + 1:] != first.shape[:axis] + first.shape[axis + 1:]:
                raise ShapeError(f"cannot concatenate {first} and {x}: all axes but {what} must agree", str(i))
            if x.dtype != first.dtype:
                raise ShapeError(f"cannot concatenate {first.dtype} and {x.dtype} tensors", str(i))
        shape = first.shape[:axis] + (sum(x.shape[axis] for x in xs),) + first.shape[axis + 1:]
        return (TensorType(shape, first.dtype, first.layout),)

    @classmethod
    def cost_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        return Cost()

    @classmethod
    def lower_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from ..nn import Concat as TorchConcat

        return TorchConcat(concat_axis(xs[0]) + 1)  # + the batch axis

    @classmethod
    def emit_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], g: Any) -> tuple[str, ...]:
        return (g.op("Concat", list(g.xs), axis=concat_axis(xs[0]) + 1),)

    @classmethod
    def brief(cls, p: Any) -> str:
        return "concat"


class Add(LayerKind):
    name = "add"
    Params = NoParams
    arity = None
    example: dict[str, Any] = {}
    doc = "Adds its inputs element-wise; every input must have the same shape."
    input_desc = "two or more tensors of one shape"
    shape_rule = "output shape = the (common) input shape"
    flops_rule = "(inputs - 1) x output elements"

    @classmethod
    def output_types(cls, p: Any, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        for i, x in enumerate(xs[1:], 1):
            if x.shape != xs[0].shape:
                raise ShapeError(f"cannot add {xs[0]} and {x}", str(i))
        return (xs[0],)

    @classmethod
    def cost_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        return Cost(flops=(len(xs) - 1) * numel(ys[0].shape))

    @classmethod
    def fix_hint(cls, body: Shape, shortcut: Shape) -> str:
        """An identity shortcut that no longer matches the body (the residual sugar adds the body
        first): project it as ResNet does (He et al. 2016, option B: a strided 1x1 convolution, then
        batch norm)."""
        x, y = shortcut, body
        if len(x) != 3 or len(y) != 3 or x[1] % y[1] or x[2] % y[2] or x[1] // y[1] != x[2] // y[2]:
            return ""
        stride = x[1] // y[1]
        return ("project the shortcut to the body's shape: `shortcut: [{conv2d: {out: %d, kernel: 1%s, "
                "bias: false}}, batchnorm]`" % (y[0], f", stride: {stride}" if stride > 1 else ""))

    @classmethod
    def lower_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from ..nn import Add as TorchAdd

        return TorchAdd()

    @classmethod
    def emit_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], g: Any) -> tuple[str, ...]:
        out = g.xs[0]
        for v in g.xs[1:]:  # left to right, as the torch module adds
            out = g.op("Add", [out, v])
        return (out,)

    @classmethod
    def brief(cls, p: Any) -> str:
        return "+"
