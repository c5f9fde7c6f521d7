"""2-D convolution (d2l ch. 7: padding, stride, multiple channels, 1x1 convolution)."""

from __future__ import annotations

from pydantic import Field

from .base import (
    Cost,
    LayerKind,
    LayerParams,
    Padding,
    PositiveInt,
    Shape,
    ShapeError,
    Size2,
    TensorType,
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

        t, b, l, r = cls.pads(p, x)
        args = dict(in_channels=x[0], out_channels=p.out, kernel_size=p.kernel, stride=p.stride,
                    dilation=p.dilation, groups=p.groups, bias=p.bias)
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
        t, b, l, r = cls.pads(p, x.shape)
        inputs = [g.x, g.param("weight")] + ([g.param("bias")] if p.bias else [])
        return g.op("Conv", inputs, kernel_shape=list(p.kernel), strides=list(p.stride), pads=[t, l, b, r],
                    dilations=list(p.dilation), group=p.groups)
