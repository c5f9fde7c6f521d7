"""Convolutions (d2l ch. 7: padding, stride, multiple channels, 1x1 convolution): 2-D, transposed 2-D
(d2l §14.10) and 1-D over sequences."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from .base import (
    Cost,
    LayerKind,
    LayerParams,
    Pad2,
    Padding,
    PositiveInt,
    Shape,
    ShapeError,
    Size2,
    TensorType,
    _is_int,
    init_weight_bias,
    numel,
    out_size,
    weight_bias_initial,
)


class Conv2dParams(LayerParams):
    out: PositiveInt
    kernel: Size2
    stride: Size2 = (1, 1)
    padding: Padding = (0, 0, 0, 0)
    dilation: Size2 = (1, 1)
    groups: PositiveInt = 1
    bias: bool = True
    in_channels: PositiveInt | None = Field(None, alias="in")


def same_padding(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """'same': output ceil(n/s); an odd total puts the extra row on top (d2l §7.3: ceil(p/2) top, floor(p/2) bottom)."""
    total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
    return (total + 1) // 2, total // 2


def same_pads_in_graph(g, v: str, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> str:
    """ONNX Pad's pads for a channels-first (N, C, *spatial) value at its own size, per spatial axis as
    `same_padding` computes them: total = max((ceil(n/s) - 1)*s + d*(k-1) + 1 - n, 0), ceil(total/2) first."""
    import numpy as np

    def i64(hint: str, *values: int) -> str:
        return g.const(hint, np.array(values, np.int64))

    begins, ends = [i64("zeros2", 0, 0)], [i64("zeros2", 0, 0)]  # batch and channels
    for axis, (k, s, d) in enumerate(zip(kernel, stride, dilation), start=2):
        n = g.op("Gather", [g.op("Shape", [v]), i64(f"axis{axis}", axis)], axis=0)  # (1,)
        stride = i64(f"stride{axis}", s)  # hints name the axis: the constants differ per axis
        steps = g.op("Div", [g.op("Add", [n, i64(f"stride_less1_{axis}", s - 1)]), stride])
        span = i64(f"span_less_stride{axis}", d * (k - 1) + 1 - s)
        total = g.op("Max", [g.op("Sub", [g.op("Add", [g.op("Mul", [steps, stride]), span]), n]),
                             i64("zero", 0)])
        begins.append(g.op("Div", [g.op("Add", [total, i64("one", 1)]), i64("two", 2)]))
        ends.append(g.op("Div", [total, i64("two", 2)]))
    return g.op("Concat", begins + ends, axis=0)


def resolve_padding(padding: tuple[int, int, int, int] | str, hw: tuple[int, int], k: tuple[int, int],
                    s: tuple[int, int], d: tuple[int, int]) -> tuple[int, int, int, int]:
    if padding == "same":
        top, bottom = same_padding(hw[0], k[0], s[0], d[0])
        left, right = same_padding(hw[1], k[1], s[1], d[1])
        return top, bottom, left, right
    return padding  # type: ignore[return-value]


class Conv2d(LayerKind):
    name = "conv2d"
    Params = Conv2dParams
    doc = "2-D convolution over (C, H, W); `out` filters of size `kernel`."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "2*MACs + one add per output element for the bias"
    shape_rule = ("(C, H, W) -> (out, floor((H + p_top + p_bottom - d*(k-1) - 1) / s) + 1, same for W); "
                  "'same' gives ceil(H/s) with ceil(p/2) on top (d2l §7.3)")
    macs_rule = "out * H' * W' * (C/groups) * kh * kw"
    example = {"out": 4, "kernel": 3, "padding": 1}

    @classmethod
    def brief(cls, p: Conv2dParams) -> str:
        stride = f", /{p.stride[0]}" if p.stride != (1, 1) else ""
        return f"{p.kernel[0]}x{p.kernel[1]} conv, {p.out}{stride}"

    @classmethod
    def pads(cls, p: Conv2dParams, x: Shape) -> tuple[int, int, int, int]:
        return resolve_padding(p.padding, (x[1], x[2]), p.kernel, p.stride, p.dilation)

    @classmethod
    def size_pads(cls, p: Conv2dParams, x: Shape) -> tuple[int, int, int, int] | str:
        """The pads, or "same" where they depend on the image's size (a strided 'same'): the lowering
        and the ONNX graph then compute them at each size, as the checker does."""
        return "same" if p.padding == "same" and p.stride != (1, 1) else cls.pads(p, x)

    @classmethod
    def infer(cls, p: Conv2dParams, x: Shape) -> Shape:
        c, h, w = x
        if p.in_channels is not None and p.in_channels != c:
            raise ShapeError(f"declared in={p.in_channels} but the input has {c} channels", "in")
        if c % p.groups or p.out % p.groups:
            raise ShapeError(f"groups={p.groups} must divide both input channels ({c}) and out ({p.out})", "groups")
        t, b, l, r = cls.pads(p, x)
        spans = [p.dilation[i] * (p.kernel[i] - 1) + 1 for i in (0, 1)]
        if spans[0] > h + t + b or spans[1] > w + l + r:
            raise ShapeError(f"kernel {p.kernel[0]}x{p.kernel[1]}"
                             + (f" (dilated to {spans[0]}x{spans[1]})" if p.dilation != (1, 1) else "")
                             + f" is larger than the padded input {h + t + b}x{w + l + r}", "kernel", "AS202")
        # d2l §7.3: floor((n - k + p + s) / s) per axis.
        return (p.out, out_size(h, p.kernel[0], p.stride[0], t + b, p.dilation[0]),
                out_size(w, p.kernel[1], p.stride[1], l + r, p.dilation[1]))

    @classmethod
    def cost(cls, p: Conv2dParams, x: Shape, y: Shape) -> Cost:
        per_output = (x[0] // p.groups) * p.kernel[0] * p.kernel[1]  # one MAC per weight the window touches
        macs = numel(y) * per_output
        bias_adds = numel(y) if p.bias else 0
        biases = p.out if p.bias else 0
        return Cost(params=p.out * per_output + biases, macs=macs, flops=2 * macs + bias_adds, biases=biases)

    @classmethod
    def lower(cls, p: Conv2dParams, x: Shape, y: Shape):
        from torch import nn

        from ..nn import PaddedConv2d

        args = dict(in_channels=x[0], out_channels=p.out, kernel_size=p.kernel, stride=p.stride,
                    dilation=p.dilation, groups=p.groups, bias=p.bias)
        pads = cls.size_pads(p, x)
        if pads == "same":
            return PaddedConv2d(pads="same", **args)
        t, b, l, r = pads
        if t == b and l == r:
            return nn.Conv2d(padding=(t, l), **args)
        return PaddedConv2d(pads=(l, r, t, b), **args)

    @classmethod
    def init(cls, module, p: Conv2dParams, scheme: str) -> bool:
        return init_weight_bias(module, scheme)

    @classmethod
    def tensors(cls, p: Conv2dParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        out = {"weight": ((p.out, x[0] // p.groups, *p.kernel), "float32")}
        if p.bias:
            out["bias"] = ((p.out,), "float32")
        return out

    @classmethod
    def initial(cls, p: Conv2dParams, x: Shape, y: Shape, scheme: str, rng):
        window = p.kernel[0] * p.kernel[1]  # torch's fans of a conv weight (out, in/groups, kh, kw)
        return weight_bias_initial(cls.tensors(p, x, y)["weight"][0], p.bias, x[0] // p.groups * window,
                                   p.out * window, scheme, rng)

    @classmethod
    def emit(cls, p: Conv2dParams, x: TensorType, y: TensorType, g) -> str:
        # fixed pads take 'same''s asymmetric split; size-dependent ones are auto_pad SAME_LOWER
        # (ceil(H/s) steps, the odd row on top), or, dilated, computed in the graph
        pads, v = cls.size_pads(p, x.shape), g.x
        if pads != "same":
            t, b, l, r = pads
            window = {"pads": [t, l, b, r]}
        elif p.dilation == (1, 1):
            window = {"auto_pad": "SAME_LOWER"}
        else:
            window, v = {}, g.op("Pad", [v, same_pads_in_graph(g, v, p.kernel, p.stride, p.dilation)])
        inputs = [v, g.param("weight")] + ([g.param("bias")] if p.bias else [])
        return g.op("Conv", inputs, kernel_shape=list(p.kernel), strides=list(p.stride),
                    dilations=list(p.dilation), group=p.groups, **window)


class ConvTranspose2dParams(LayerParams):
    out: PositiveInt
    kernel: Size2
    stride: Size2 = (1, 1)
    padding: Pad2 = (0, 0)
    output_padding: Pad2 = (0, 0)
    dilation: Size2 = (1, 1)
    groups: PositiveInt = 1
    bias: bool = True


class ConvTranspose2d(LayerKind):
    name = "conv_transpose2d"
    Params = ConvTranspose2dParams
    doc = ("Transposed ('fractionally strided') 2-D convolution, the gradient of conv2d with respect to its "
           "input: upsamples by `stride` (d2l §14.10; FCN, U-Net decoders).")
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "2*MACs + one add per output element for the bias"
    shape_rule = "(C, H, W) -> (out, (H - 1)*s - 2p + d*(k - 1) + output_padding + 1, same for W) (PyTorch ConvTranspose2d docs)"
    macs_rule = "H * W * C * (out/groups) * kh * kw: every input element meets every weight of its group"
    example = {"out": 4, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}

    @classmethod
    def brief(cls, p: ConvTranspose2dParams) -> str:
        return f"{p.kernel[0]}x{p.kernel[1]} deconv, {p.out}" + (f", x{p.stride[0]}" if p.stride != (1, 1) else "")

    @classmethod
    def infer(cls, p: ConvTranspose2dParams, x: Shape) -> Shape:
        c, h, w = x
        if c % p.groups or p.out % p.groups:
            raise ShapeError(f"groups={p.groups} must divide both input channels ({c}) and out ({p.out})", "groups")
        for i in (0, 1):
            if p.output_padding[i] >= max(p.stride[i], p.dilation[i]):
                raise ShapeError(f"output_padding {list(p.output_padding)} must be smaller than the stride or "
                                 "the dilation (PyTorch's rule)", "output_padding")
        # PyTorch ConvTranspose2d docs: H_out = (H - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1
        return (p.out,) + tuple((n - 1) * p.stride[i] - 2 * p.padding[i] + p.dilation[i] * (p.kernel[i] - 1)
                                + p.output_padding[i] + 1 for i, n in enumerate((h, w)))

    @classmethod
    def cost(cls, p: ConvTranspose2dParams, x: Shape, y: Shape) -> Cost:
        weights = x[0] * (p.out // p.groups) * p.kernel[0] * p.kernel[1]
        macs = weights * x[1] * x[2]  # torch.utils.flop_counter conv_flop_count, transposed: input positions
        biases = p.out if p.bias else 0
        return Cost(params=weights + biases, macs=macs, flops=2 * macs + (numel(y) if p.bias else 0), biases=biases)

    @classmethod
    def lower(cls, p: ConvTranspose2dParams, x: Shape, y: Shape):
        from torch import nn

        return nn.ConvTranspose2d(x[0], p.out, p.kernel, p.stride, p.padding, p.output_padding, p.groups,
                                  p.bias, p.dilation)

    @classmethod
    def init(cls, module, p: ConvTranspose2dParams, scheme: str) -> bool:
        return init_weight_bias(module, scheme)

    @classmethod
    def tensors(cls, p: ConvTranspose2dParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        out = {"weight": ((x[0], p.out // p.groups, *p.kernel), "float32")}  # (in, out/groups, kh, kw), as torch's
        if p.bias:
            out["bias"] = ((p.out,), "float32")
        return out

    @classmethod
    def initial(cls, p: ConvTranspose2dParams, x: Shape, y: Shape, scheme: str, rng):
        # torch's fans read the weight's axes 1 and 0 (nn.init._calculate_fan_in_and_fan_out), which a
        # transposed weight holds as out/groups and in; drawn (out, in/groups, kh, kw), the same count
        # of independent values, so the bias gets `out` of them, and laid out as torch holds it
        window = p.kernel[0] * p.kernel[1]
        values = weight_bias_initial((p.out, x[0] // p.groups, *p.kernel), p.bias, p.out // p.groups * window,
                                     x[0] * window, scheme, rng)
        values["weight"] = values["weight"].reshape(cls.tensors(p, x, y)["weight"][0])
        return values

    @classmethod
    def emit(cls, p: ConvTranspose2dParams, x: TensorType, y: TensorType, g) -> str:
        # ONNX ConvTranspose's weight layout is torch's, and its explicit pads and output_padding give
        # torch's size: (H - 1)*s - pads + d*(k - 1) + output_padding + 1
        inputs = [g.x, g.param("weight")] + ([g.param("bias")] if p.bias else [])
        return g.op("ConvTranspose", inputs, kernel_shape=list(p.kernel), strides=list(p.stride),
                    pads=[*p.padding, *p.padding], output_padding=list(p.output_padding),
                    dilations=list(p.dilation), group=p.groups)


def _padding1d(v: Any) -> tuple[int, int] | str:
    """int | [left, right] | 'same' | 'valid' -> (left, right) or 'same'."""
    if v in ("same", "valid"):
        return "same" if v == "same" else (0, 0)
    if _is_int(v):
        v = [v, v]
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) for x in v):
        if min(v) < 0:
            raise PydanticCustomError("out_of_range", "padding must be >= 0, got {got}", {"got": list(v)})
        return (v[0], v[1])
    raise ValueError(f"expected padding as an integer, [left, right], 'same' or 'valid', got {v!r}")


Padding1d = Annotated[Any, PlainValidator(_padding1d), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 0}, {"enum": ["same", "valid"]}, {"type": "string"},
    {"type": "array", "items": {"type": ["integer", "string"]}, "minItems": 2, "maxItems": 2}]})]


class Conv1dParams(LayerParams):
    out: PositiveInt
    kernel: PositiveInt
    stride: PositiveInt = 1
    padding: Padding1d = (0, 0)
    dilation: PositiveInt = 1
    groups: PositiveInt = 1
    bias: bool = True


class Conv1d(LayerKind):
    name = "conv1d"
    Params = Conv1dParams
    doc = ("1-D convolution along the time axis of a sequence (T, F), its features as channels "
           "(d2l §15.3, text CNNs; WaveNet with `dilation`). `padding`: int, [left, right], 'same' or 'valid'.")
    input_rank = (2,)
    input_desc = "(T, F)"
    input_layouts = ("TF",)
    flops_rule = "2*MACs + one add per output element for the bias"
    shape_rule = "(T, F) -> (floor((T + p_left + p_right - d*(k-1) - 1) / s) + 1, out)"
    macs_rule = "T' * out * (F/groups) * k"
    example = {"out": 4, "kernel": 3, "padding": "same"}

    @classmethod
    def pads(cls, p: Conv1dParams, x: Shape) -> tuple[int, int]:
        if p.padding == "same":
            return same_padding(x[0], p.kernel, p.stride, p.dilation)
        return p.padding

    @classmethod
    def length_pads(cls, p: Conv1dParams, x: Shape) -> tuple[int, int] | str:
        """The pads, or "same" where they depend on the sequence's length (a strided 'same'): the
        lowering and the ONNX graph then compute them at each length, as the checker does."""
        return "same" if p.padding == "same" and p.stride > 1 else cls.pads(p, x)

    @classmethod
    def infer(cls, p: Conv1dParams, x: Shape) -> Shape:
        steps, c = x
        if c % p.groups or p.out % p.groups:
            raise ShapeError(f"groups={p.groups} must divide both input features ({c}) and out ({p.out})", "groups")
        left, right = cls.pads(p, x)
        span = p.dilation * (p.kernel - 1) + 1
        if span > steps + left + right:
            raise ShapeError(f"kernel {p.kernel}" + (f" (dilated to {span})" if p.dilation > 1 else "")
                             + f" is longer than the padded sequence {steps + left + right}", "kernel", "AS202")
        return (out_size(steps, p.kernel, p.stride, left + right, p.dilation), p.out)

    @classmethod
    def cost(cls, p: Conv1dParams, x: Shape, y: Shape) -> Cost:
        per_output = (x[1] // p.groups) * p.kernel
        macs = numel(y) * per_output
        biases = p.out if p.bias else 0
        return Cost(params=p.out * per_output + biases, macs=macs, flops=2 * macs + (numel(y) if p.bias else 0),
                    biases=biases)

    @classmethod
    def lower(cls, p: Conv1dParams, x: Shape, y: Shape):
        from ..nn import SequenceConv1d

        return SequenceConv1d(x[1], p.out, p.kernel, stride=p.stride, dilation=p.dilation, groups=p.groups,
                              bias=p.bias, pads=cls.length_pads(p, x))

    @classmethod
    def init(cls, module, p: Conv1dParams, scheme: str) -> bool:
        return init_weight_bias(module, scheme)

    @classmethod
    def tensors(cls, p: Conv1dParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        out = {"weight": ((p.out, x[1] // p.groups, p.kernel), "float32")}
        if p.bias:
            out["bias"] = ((p.out,), "float32")
        return out

    @classmethod
    def initial(cls, p: Conv1dParams, x: Shape, y: Shape, scheme: str, rng):
        return weight_bias_initial((p.out, x[1] // p.groups, p.kernel), p.bias, x[1] // p.groups * p.kernel,
                                   p.out * p.kernel, scheme, rng)

    @classmethod
    def emit(cls, p: Conv1dParams, x: TensorType, y: TensorType, g) -> str:
        # (N, T, F) -> (N, F, T): ONNX Conv reads channels first. Fixed pads take 'same''s asymmetric
        # split; length-dependent ones are auto_pad SAME_LOWER (ceil(T/s) steps, the odd step on the
        # left), or, dilated, where onnxruntime's Conv refuses auto_pad, computed in the graph
        pads = cls.length_pads(p, x.shape)
        v = g.op("Transpose", [g.x], perm=[0, 2, 1])
        if pads != "same":
            window = {"pads": list(pads)}
        elif p.dilation == 1:
            window = {"auto_pad": "SAME_LOWER"}
        else:
            window, v = {}, g.op("Pad", [v, same_pads_in_graph(g, v, (p.kernel,), (p.stride,), (p.dilation,))])
        inputs = [v, g.param("weight")] + ([g.param("bias")] if p.bias else [])
        v = g.op("Conv", inputs, kernel_shape=[p.kernel], strides=[p.stride], dilations=[p.dilation], group=p.groups,
                 **window)
        return g.op("Transpose", [v], perm=[0, 2, 1])
