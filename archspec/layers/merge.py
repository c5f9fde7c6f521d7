"""The N-ary kinds: channel/feature concatenation (Inception, DenseNet, multi-input heads),
element-wise addition (ResNet, same shapes) and multiplication (squeeze-and-excitation, broadcast).
Concat and add are written as branches (`concat: {b1: [...], b2: [...]}`) or over
named values (`- {concat, from: [stage2, stage4]}`); both become one node of these kinds."""

from __future__ import annotations

from typing import Any

from .base import AXIS_NAMES, Cost, LayerKind, NoParams, Shape, ShapeError, TensorType, numel


def concat_axis(t: TensorType) -> int:
    """Per-sample axis joined: channels of an image (C), features of a sequence or vector (F)."""
    return t.channel_axis or 0


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
                differ = next((k for k, (m, n) in enumerate(zip(first.shape, x.shape)) if k != axis and m != n), None)
                raise ShapeError(f"cannot concatenate {first} and {x}: all axes but {what} must agree", str(i),
                                 axis=differ)
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


def broadcast(xs: tuple[TensorType, ...]) -> tuple[int, ...]:
    """NumPy broadcasting over the per-sample shapes, aligned on the right: each axis is equal or 1
    in every input (an SE gate (C, 1, 1) times a (C, H, W) map). Raises ShapeError at the first misfit."""
    rank = max(len(x.shape) for x in xs)
    out = [1] * rank
    for i, x in enumerate(xs):
        if x.dtype != xs[0].dtype:
            raise ShapeError(f"cannot combine {xs[0].dtype} and {x.dtype} tensors", str(i))
        for axis, n in enumerate(x.shape, rank - len(x.shape)):
            if n != 1 and out[axis] not in (1, n):
                raise ShapeError(f"cannot broadcast {xs[0]} and {x}: axis {axis} is {out[axis]} in one and {n} "
                                 "in the other (each axis must be equal or 1)", str(i))
            out[axis] = max(out[axis], n)
    return tuple(out)


def misaligned(x: TensorType, wide: TensorType) -> int | None:
    """The first axis of x (size > 1) that right-alignment pairs with an axis of another meaning in
    `wide` (a features vector against an image's width); channels and features count as one meaning
    (a channels-last gate). None where the layouts do not name every axis."""
    axes, wide_axes = x.axes, wide.axes
    if len(axes) != len(x.shape) or len(wide_axes) != len(wide.shape):
        return None
    offset = len(wide.shape) - len(x.shape)
    for axis, (n, letter) in enumerate(zip(x.shape, axes)):
        other = wide_axes[axis + offset]
        if n != 1 and letter != other and not {letter, other} <= {"C", "F"}:
            return axis
    return None


class Mul(LayerKind):
    name = "mul"
    Params = NoParams
    arity = None
    example: dict[str, Any] = {}
    doc = ("Multiplies its inputs element-wise, with broadcasting: squeeze-and-excitation gates "
           "(Hu et al. 2018), layer scale. Written over named values: `- {mul, from: [x, gate]}`. Shapes align "
           "on the right, as NumPy's, and the aligned axes must mean the same (by layout): a gate of C values "
           "against a (C, H, W) map would pair with W and is refused even where C == W, so make the gate "
           "(C, 1, 1) (`reshape`, or `adaptive_avgpool2d` and 1x1 convolutions).")
    input_desc = "two or more tensors whose shapes broadcast"
    shape_rule = "the broadcast shape: per axis, from the right, equal sizes or 1"
    flops_rule = "(inputs - 1) x output elements"

    @classmethod
    def fix_hint(cls, first: Shape, other: Shape) -> str:
        """A gate of C values against a (C, H, W) map aligns with W, from the right: it needs (C, 1, 1)."""
        gate, image = (first, other) if len(first) == 1 else (other, first)
        if len(gate) != 1 or len(image) != 3 or gate[0] != image[0]:
            return ""
        return (f"a per-channel gate of {gate[0]} values must be {gate[0]}x1x1 to broadcast over channels: "
                f"`reshape: {{shape: [{gate[0]}, 1, 1]}}` before the mul, or make it with "
                "`adaptive_avgpool2d: {output: 1}` and 1x1 conv2d layers, as torchvision's SE does")

    @classmethod
    def output_types(cls, p: Any, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        shape = broadcast(xs)
        w, widest = next(((i, x) for i, x in enumerate(xs) if x.shape == shape), (0, xs[0]))
        for i, x in enumerate(xs):
            axis = misaligned(x, widest)
            if axis is not None:  # sizes that fit by chance (C == W) must not pair axes of other meanings
                mine, theirs = x.axes[axis], widest.axes[axis + len(widest.shape) - len(x.shape)]
                raise ShapeError(f"shapes align on the right, so the {AXIS_NAMES.get(mine, mine)} axis of {x} would "
                                 f"multiply the {AXIS_NAMES.get(theirs, theirs)} axis of {widest}", str(max(i, w)))
        return (TensorType(shape, xs[0].dtype, widest.layout),)

    @classmethod
    def cost_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        return Cost(flops=(len(xs) - 1) * numel(ys[0].shape))

    @classmethod
    def lower_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from ..nn import Mul as TorchMul

        return TorchMul()

    @classmethod
    def emit_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], g: Any) -> tuple[str, ...]:
        import numpy as np

        rank = len(ys[0].shape)
        values = []
        for v, x in zip(g.xs, xs):
            if len(x.shape) < rank:  # per-sample shapes align on the right, behind the batch axis
                missing = np.arange(1, rank - len(x.shape) + 1, dtype=np.int64)
                v = g.op("Unsqueeze", [v, g.const("axes" + "_".join(map(str, missing)), missing)])
            values.append(v)
        out = values[0]
        for v in values[1:]:  # left to right, as the torch module multiplies
            out = g.op("Mul", [out, v])
        return (out,)

    @classmethod
    def brief(cls, p: Any) -> str:
        return "x"
