"""Pooling (d2l §7.5): max/average windows over images and along sequences, global pooling, adaptive
average pooling."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from .base import (
    Cost,
    LayerKind,
    LayerParams,
    NoParams,
    Pad2,
    PositiveInt,
    Shape,
    ShapeError,
    Size2,
    TensorType,
    numel,
    out_size,
)


class PoolParams(LayerParams):
    kernel: Size2
    stride: Size2 | None = None  # defaults to the kernel, as in PyTorch
    padding: Pad2 = (0, 0)
    ceil_mode: bool = False

    @field_validator("padding")
    @classmethod
    def _padding_at_most_half_kernel(cls, padding: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        # PyTorch rejects pad > kernel/2; catching it here keeps the checker and the module in agreement.
        # A field validator, so the error points at `padding` (kernel is validated first, if valid).
        kernel = info.data.get("kernel")
        if kernel is not None and any(2 * p > k for p, k in zip(padding, kernel)):
            raise ValueError(f"padding {list(padding)} must be at most half the kernel {list(kernel)}")
        return padding

    @property
    def strides(self) -> tuple[int, int]:
        return self.stride or self.kernel


class AvgPoolParams(PoolParams):
    count_include_pad: bool = True


class _Pool(LayerKind):
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "one comparison or add per window element per output"
    shape_rule = ("(C, H, W) -> (C, floor-or-ceil((H + 2p - k) / s) + 1, ...); with ceil_mode a window "
                  "starting in the right padding is dropped (PyTorch MaxPool2d docs)")
    example = {"kernel": 2}

    @classmethod
    def infer(cls, p: PoolParams, x: Shape) -> Shape:
        c, h, w = x
        for axis, n in ((0, h), (1, w)):
            if p.kernel[axis] > n + 2 * p.padding[axis] and not p.ceil_mode:  # ceil mode: out_size decides
                raise ShapeError(f"window {p.kernel[0]}x{p.kernel[1]} is larger than the padded input "
                                 f"{h + 2 * p.padding[0]}x{w + 2 * p.padding[1]}", "kernel", "AS202")
        s = p.strides
        out = tuple(out_size(n, p.kernel[i], s[i], 2 * p.padding[i], 1, p.ceil_mode, p.padding[i])
                    for i, n in enumerate((h, w)))
        onnx_ceil = tuple(_ceil_keeping_last(n, p, i) for i, n in enumerate((h, w)))
        if cls.lowered_ceil_mode(p, x) and out != onnx_ceil:
            raise ShapeError("ceil_mode adds a last window on one axis and drops one that would start in the "
                             "padding on the other; ONNX pooling has one ceil_mode for both axes, so the "
                             "export could not compute this; use ceil_mode: false or change the padding",
                             "ceil_mode", "AS107")
        return (c,) + out

    @classmethod
    def cost(cls, p: PoolParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=numel(y) * p.kernel[0] * p.kernel[1])

    @classmethod
    def lowered_ceil_mode(cls, p: PoolParams, x: Shape) -> bool:
        """ceil_mode only where it adds a window. Where PyTorch drops the extra window (it would start
        in the right padding) the result equals floor mode, which ONNX computes identically; ONNX's
        ceil mode keeps that window, so exporting ceil_mode there would change the shape."""
        s = p.strides
        return p.ceil_mode and any(
            out_size(n, p.kernel[i], s[i], 2 * p.padding[i], 1, True, p.padding[i])
            != out_size(n, p.kernel[i], s[i], 2 * p.padding[i], 1, False) for i, n in enumerate(x[1:]))

    @classmethod
    def window(cls, p: PoolParams, x: Shape) -> dict:
        """The ONNX pooling attributes; pads are (top, left, bottom, right)."""
        return dict(kernel_shape=list(p.kernel), strides=list(p.strides), pads=[*p.padding, *p.padding],
                    ceil_mode=int(cls.lowered_ceil_mode(p, x)))

    @classmethod
    def brief(cls, p: PoolParams) -> str:
        stride = f", /{p.strides[0]}" if p.strides != (1, 1) else ""
        return f"{p.kernel[0]}x{p.kernel[1]} {cls.name[:3]} pool{stride}"


def _ceil_keeping_last(n: int, p: PoolParams, axis: int) -> int:
    """Output length in ONNX's ceil mode, which keeps a last window starting in the padding
    (ONNX MaxPool: ceil((n + pads - k) / s) + 1)."""
    return -(-(n + 2 * p.padding[axis] - p.kernel[axis]) // p.strides[axis]) + 1


class MaxPool2d(_Pool):
    name = "maxpool2d"
    Params = PoolParams
    doc = "Max pooling; `stride` defaults to `kernel`; `ceil_mode` as in PyTorch."

    @classmethod
    def lower(cls, p: PoolParams, x: Shape, y: Shape):
        from torch import nn

        return nn.MaxPool2d(p.kernel, p.strides, p.padding, ceil_mode=cls.lowered_ceil_mode(p, x))

    @classmethod
    def emit(cls, p: PoolParams, x: TensorType, y: TensorType, g) -> str:
        return g.op("MaxPool", [g.x], **cls.window(p, x.shape))


class AvgPool2d(_Pool):
    name = "avgpool2d"
    Params = AvgPoolParams
    doc = "Average pooling; `count_include_pad` as in PyTorch."

    @classmethod
    def lower(cls, p: AvgPoolParams, x: Shape, y: Shape):
        from torch import nn

        return nn.AvgPool2d(p.kernel, p.strides, p.padding, ceil_mode=cls.lowered_ceil_mode(p, x),
                            count_include_pad=p.count_include_pad)

    @classmethod
    def emit(cls, p: AvgPoolParams, x: TensorType, y: TensorType, g) -> str:
        return g.op("AveragePool", [g.x], count_include_pad=int(p.count_include_pad), **cls.window(p, x.shape))


class GlobalAvgPool(LayerKind):
    name = "global_avgpool"
    Params = NoParams
    doc = "Average over all positions: (C, H, W) -> (C)."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "one add per input element"
    shape_rule = "(C, H, W) -> (C)"
    example = {}
    reduce = "avg"

    @classmethod
    def infer(cls, p: NoParams, x: Shape) -> Shape:
        return (x[0],)

    @classmethod
    def cost(cls, p: NoParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=numel(x))

    @classmethod
    def lower(cls, p: NoParams, x: Shape, y: Shape):
        from ..nn import GlobalPool

        return GlobalPool(cls.reduce)

    @classmethod
    def emit(cls, p: NoParams, x: TensorType, y: TensorType, g) -> str:
        pooled = g.op("GlobalAveragePool" if cls.reduce == "avg" else "GlobalMaxPool", [g.x])
        return g.op("Flatten", [pooled], axis=1)


class GlobalMaxPool(GlobalAvgPool):
    name = "global_maxpool"
    doc = "Maximum over all positions: (C, H, W) -> (C)."
    flops_rule = "one comparison per input element"
    reduce = "max"


class AdaptiveParams(LayerParams):
    output: Size2


def _window_total(n: int, out: int) -> int:
    """Sum of PyTorch's adaptive window sizes [floor(i*n/out), ceil((i+1)*n/out)) over i < out
    (aten AdaptiveAveragePooling.cpp), in closed form: n + out - gcd(n, out)."""
    return n + out - math.gcd(n, out)


class AdaptiveAvgPool2d(LayerKind):
    name = "adaptive_avgpool2d"
    Params = AdaptiveParams
    doc = ("Average pooling to a fixed `output` size; lowered to plain average pooling when the input "
           "divides evenly, so exports stay clean.")
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "one add per element of each (possibly overlapping) window"
    shape_rule = "(C, H, W) -> (C, *output)"
    example = {"output": 1}

    @classmethod
    def infer(cls, p: AdaptiveParams, x: Shape) -> Shape:
        return (x[0],) + p.output

    @classmethod
    def cost(cls, p: AdaptiveParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=x[0] * _window_total(x[1], p.output[0]) * _window_total(x[2], p.output[1]))

    @classmethod
    def lower(cls, p: AdaptiveParams, x: Shape, y: Shape):
        from torch import nn

        (h, w), (oh, ow) = x[1:], p.output
        if (h, w) == (oh, ow):
            return nn.Identity()
        if h % oh == 0 and w % ow == 0:
            return nn.AvgPool2d((h // oh, w // ow))
        return nn.AdaptiveAvgPool2d(p.output)

    @classmethod
    def emit(cls, p: AdaptiveParams, x: TensorType, y: TensorType, g) -> str:
        (h, w), (oh, ow) = x.shape[1:], p.output
        if (h, w) == (oh, ow):
            return g.x
        if h % oh == 0 and w % ow == 0:
            return g.op("AveragePool", [g.x], kernel_shape=[h // oh, w // ow], strides=[h // oh, w // ow])
        # uneven: PyTorch's windows [floor(i*n/out), ceil((i+1)*n/out)) per axis (aten
        # AdaptiveAveragePooling.cpp); a mean over a rectangle is the mean over rows of the mean over
        # columns, so each axis is pooled on its own. Windows of one size k (14 -> 4: starts 0, 3, 7, 10,
        # all 4 wide) are one AveragePool of kernel k, its stride if the starts are evenly spaced, else
        # stride 1 and a Gather of the starts; windows of several sizes a Slice and ReduceMean each
        # (one onnxruntime kernel instead of 2*out small ones: GoogLeNet's aux heads 3% faster).
        import numpy as np

        v = g.x
        for axis, n, out in ((2, h, oh), (3, w, ow)):
            if n == out:
                continue
            starts = [i * n // out for i in range(out)]
            ends = [-(-(i + 1) * n // out) for i in range(out)]
            sizes = {e - s for s, e in zip(starts, ends)}
            if len(sizes) == 1:
                k, steps = sizes.pop(), {b - a for a, b in zip(starts, starts[1:])}
                stride = steps.pop() if len(steps) == 1 else 1
                kernel, strides = [1, 1], [1, 1]
                kernel[axis - 2], strides[axis - 2] = k, stride
                v = g.op("AveragePool", [v], kernel_shape=kernel, strides=strides)
                if stride == 1 and n - k + 1 != out:
                    v = g.op("Gather", [v, g.const(f"starts{axis}", np.array(starts, np.int64))], axis=axis)
                continue
            cells = []
            for start, end in zip(starts, ends):
                part = g.op("Slice", [v, g.const(f"start{start}", np.array([start], np.int64)),
                                      g.const(f"end{end}", np.array([end], np.int64)),
                                      g.const(f"axis{axis}", np.array([axis], np.int64))])
                cells.append(g.reduce("ReduceMean", part, [axis]))
            v = g.op("Concat", cells, axis=axis)
        return v


class Pool1dParams(LayerParams):
    kernel: PositiveInt
    stride: PositiveInt | None = None  # defaults to the kernel, as in PyTorch
    padding: Annotated[int, Field(ge=0)] = 0
    ceil_mode: bool = False

    @field_validator("padding")
    @classmethod
    def _padding_at_most_half_kernel(cls, padding: int, info: ValidationInfo) -> int:
        kernel = info.data.get("kernel")
        if kernel is not None and 2 * padding > kernel:  # PyTorch's rule, as for 2-D pooling
            raise ValueError(f"padding {padding} must be at most half the kernel {kernel}")
        return padding


class AvgPool1dParams(Pool1dParams):
    count_include_pad: bool = True


class _Pool1d(LayerKind):
    input_rank = (2,)
    input_desc = "(T, F)"
    input_layouts = ("TF",)
    flops_rule = "one comparison or add per window element per output"
    shape_rule = "(T, F) -> (floor-or-ceil((T + 2p - k) / s) + 1, F), pooling along time per feature"
    example = {"kernel": 2}

    @classmethod
    def infer(cls, p: Pool1dParams, x: Shape) -> Shape:
        steps, features = x
        if p.kernel > steps + 2 * p.padding and not p.ceil_mode:
            raise ShapeError(f"window {p.kernel} is longer than the padded sequence {steps + 2 * p.padding}",
                             "kernel", "AS202")
        return (out_size(steps, p.kernel, p.stride or p.kernel, 2 * p.padding, 1, p.ceil_mode, p.padding), features)

    @classmethod
    def cost(cls, p: Pool1dParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=numel(y) * p.kernel)

    @classmethod
    def over_time(cls, p: Pool1dParams, g, op: str, **attrs) -> str:
        """(N, T, F) -> (N, F, T), the 1-D pool `op` along time, and back, with PyTorch's ceil mode at
        every length: a last window that starts in the right padding is dropped (aten
        pooling_output_shape; the ONNX MaxPool-22 schema says so too, runtimes older than it keep the
        window). Where that can happen (stride > kernel - padding), the windows from ceil((T + p)/s)
        on, the first to start there, are sliced off at the input's length: a no-op on onnxruntime 1.32."""
        import numpy as np

        s = p.stride or p.kernel
        v = g.op("Transpose", [g.x], perm=[0, 2, 1])
        pooled = g.op(op, [v], kernel_shape=[p.kernel], strides=[s], pads=[p.padding, p.padding],
                      ceil_mode=int(p.ceil_mode), **attrs)
        if p.ceil_mode and s > p.kernel - p.padding:
            axis = g.const("axis2", np.array([2], np.int64))
            t = g.op("Gather", [g.op("Shape", [v]), axis], axis=0)
            end = g.op("Div", [g.op("Add", [t, g.const("pad_stride_less1", np.array([p.padding + s - 1], np.int64))]),
                               g.const("stride", np.array([s], np.int64))])
            pooled = g.op("Slice", [pooled, g.const("zero", np.array([0], np.int64)), end, axis])
        return g.op("Transpose", [pooled], perm=[0, 2, 1])


class MaxPool1d(_Pool1d):
    name = "maxpool1d"
    Params = Pool1dParams
    doc = "Max pooling along the time axis of a sequence; `stride` defaults to `kernel`."

    @classmethod
    def lower(cls, p: Pool1dParams, x: Shape, y: Shape):
        from torch import nn

        from ..nn import OverTime

        # as a 1 x k 2-D pool: torch 2.13's dynamo exporter pins the time axis of max_pool1d
        return OverTime(nn.MaxPool2d((1, p.kernel), (1, p.stride or p.kernel), (0, p.padding),
                                     ceil_mode=p.ceil_mode), as_2d=True)

    @classmethod
    def emit(cls, p: Pool1dParams, x: TensorType, y: TensorType, g) -> str:
        return cls.over_time(p, g, "MaxPool")


class AvgPool1d(_Pool1d):
    name = "avgpool1d"
    Params = AvgPool1dParams
    doc = "Average pooling along the time axis of a sequence; `count_include_pad` as in PyTorch."

    @classmethod
    def lower(cls, p: AvgPool1dParams, x: Shape, y: Shape):
        from torch import nn

        from ..nn import OverTime

        return OverTime(nn.AvgPool1d(p.kernel, p.stride or p.kernel, p.padding,
                                     ceil_mode=p.ceil_mode, count_include_pad=p.count_include_pad))

    @classmethod
    def emit(cls, p: AvgPool1dParams, x: TensorType, y: TensorType, g) -> str:
        return cls.over_time(p, g, "AveragePool", count_include_pad=int(p.count_include_pad))
