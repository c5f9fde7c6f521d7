"""Tensor-shape plumbing (per-sample axes, batch excluded): permute, transpose, reshape, slice,
select, pad, channel shuffle, and resampling (upsample). None has parameters or MACs."""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, ValidationInfo, WithJsonSchema, field_validator, model_validator

from .base import (AXIS_NAMES, Cost, LayerKind, LayerParams, Padding, PositiveInt, Shape, ShapeError, Size2,
                   TensorType, _is_int, numel)

INT64_MAX = 2**63 - 1  # ONNX Slice's "to the end"


def _int_list(what: str, length: int | None = None) -> Any:
    """A YAML list of integers, kept as a tuple (parameters are frozen and hashable)."""
    def check(v: Any) -> tuple[int, ...]:
        if isinstance(v, (list, tuple)) and all(_is_int(x) for x in v) and (length is None or len(v) == length):
            return tuple(v)
        raise ValueError(f"expected {what}, got {v!r}")

    schema: dict[str, Any] = {"type": "array", "items": {"type": "integer"}}
    if length is not None:
        schema.update(minItems=length, maxItems=length)
    return Annotated[tuple[int, ...], PlainValidator(check), WithJsonSchema(schema)]


def axis(dim: int, x: TensorType | Shape, field: str = "dim", given: tuple[int, ...] | None = None) -> int:
    """A per-sample axis, negative counting from the end, as a non-negative index. One that does not
    exist is refused naming the axes that do, by their layout's names where `x` is typed; `given`: the
    whole list the axis was written in (`dims: [0, 2]`)."""
    shape = x.shape if isinstance(x, TensorType) else x
    rank = len(shape)
    if not -rank <= dim < rank:
        written = f"{field} {list(given)}" if given is not None else f"{field}={dim}"
        layout = x.axes if isinstance(x, TensorType) and len(x.axes) == rank else ""
        names = f" ({', '.join(AXIS_NAMES.get(a, a) for a in layout)})" if layout else ""
        has = f"axes 0..{rank - 1}{names}" if rank else "no axes"
        raise ShapeError(f"{written}: axis {dim} does not exist; the {_fmt(shape)} input has {has}", field)
    return dim % rank


class _View(LayerKind):
    """A kind that only moves or selects elements: no parameters, no arithmetic."""

    flops_rule = "none (data movement)"

    @classmethod
    def cost(cls, p, x: Shape, y: Shape) -> Cost:
        return Cost()


class PermuteParams(LayerParams):
    dims: _int_list("a list of axes") = Field(description="a permutation of the per-sample axes, e.g. [1, 2, 0]: (C, H, W) -> (H, W, C)")


class Permute(_View):
    name = "permute"
    Params = PermuteParams
    doc = ("Reorders the per-sample axes (image <-> token layouts, ConvNeXt's channels-last blocks); the layout's "
           "letters move with them, so (C, H, W) by [1, 2, 0] is HWC, which kinds that need CHW refuse.")
    shape_rule = "axis i of the output is axis dims[i] of the input"
    example = {"dims": [1, 2, 0]}

    @classmethod
    def infer(cls, p: PermuteParams, x: Shape) -> Shape:
        dims = [axis(d, x, "dims", p.dims) for d in p.dims]
        if sorted(dims) != list(range(len(x))):
            raise ShapeError(f"dims {list(p.dims)} is not a permutation of the {len(x)} axes of a {_fmt(x)} input", "dims")
        return tuple(x[d] for d in dims)

    @classmethod
    def output_type(cls, p: PermuteParams, x: TensorType) -> TensorType:
        for d in p.dims:  # an axis that does not exist is named with the layout's axes
            axis(d, x, "dims", p.dims)
        shape = cls.infer(p, x.shape)  # the layout's letters move with their axes: CHW by [1, 2, 0] is HWC
        return TensorType(shape, x.dtype, x.permuted([d % len(x.shape) for d in p.dims]))

    @classmethod
    def lower(cls, p: PermuteParams, x: Shape, y: Shape):
        from ..nn import Permute as TorchPermute

        return TorchPermute([0] + [d % len(x) + 1 for d in p.dims])

    @classmethod
    def emit(cls, p: PermuteParams, x: TensorType, y: TensorType, g) -> str:
        return g.op("Transpose", [g.x], perm=[0] + [d % len(x.shape) + 1 for d in p.dims])


class TransposeParams(LayerParams):
    dims: _int_list("two axes, [a, b]", 2) = Field(description="the two per-sample axes swapped")


class Transpose(_View):
    name = "transpose"
    Params = TransposeParams
    doc = "Swaps two per-sample axes and their layout letters, e.g. (T, F) -> (F, T), layout TF -> FT."
    shape_rule = "the two axes `dims` exchanged"
    example = {"dims": [0, 2]}

    @classmethod
    def infer(cls, p: TransposeParams, x: Shape) -> Shape:
        a, b = (axis(d, x, "dims", p.dims) for d in p.dims)
        out = list(x)
        out[a], out[b] = x[b], x[a]
        return tuple(out)

    @classmethod
    def output_type(cls, p: TransposeParams, x: TensorType) -> TensorType:
        order = list(range(len(x.shape)))  # the layout's letters swap with their axes: TF is FT
        a, b = (axis(d, x, "dims", p.dims) for d in p.dims)
        order[a], order[b] = order[b], order[a]
        return TensorType(cls.infer(p, x.shape), x.dtype, x.permuted(order))

    @classmethod
    def lower(cls, p: TransposeParams, x: Shape, y: Shape):
        from ..nn import Permute as TorchPermute

        order = list(range(len(x)))
        a, b = (d % len(x) for d in p.dims)
        order[a], order[b] = order[b], order[a]
        return TorchPermute([0] + [d + 1 for d in order])

    @classmethod
    def emit(cls, p: TransposeParams, x: TensorType, y: TensorType, g) -> str:
        perm = list(range(len(x.shape) + 1))
        a, b = (d % len(x.shape) + 1 for d in p.dims)
        perm[a], perm[b] = perm[b], perm[a]
        return g.op("Transpose", [g.x], perm=perm)


class ReshapeParams(LayerParams):
    shape: _int_list("a list of sizes") = Field(description="the per-sample output shape; one entry may be -1 (inferred)")


class Reshape(_View):
    name = "reshape"
    Params = ReshapeParams
    doc = "Gives the per-sample elements a new shape (row-major order, as torch.reshape)."
    shape_rule = "`shape`, its one -1 inferred so that the element count is kept"
    example = {"shape": [-1, 9]}

    @classmethod
    def infer(cls, p: ReshapeParams, x: Shape) -> Shape:
        if not p.shape:
            raise ShapeError("reshape needs at least one output axis", "shape")
        if p.shape.count(-1) > 1 or any(d < -1 or d == 0 for d in p.shape):
            raise ShapeError(f"shape {list(p.shape)}: sizes must be positive, with at most one -1", "shape")
        known, total = numel(tuple(d for d in p.shape if d != -1)), numel(x)
        if -1 in p.shape:
            if total % known:
                raise ShapeError(f"cannot reshape {total} elements ({_fmt(x)}) into {list(p.shape)}: "
                                 f"{total} is not a multiple of {known}", "shape")
            return tuple(total // known if d == -1 else d for d in p.shape)
        if known != total:
            raise ShapeError(f"cannot reshape {total} elements ({_fmt(x)}) into {list(p.shape)} ({known} elements)", "shape")
        return tuple(p.shape)

    @classmethod
    def lower(cls, p: ReshapeParams, x: Shape, y: Shape):
        from ..nn import Reshape as TorchReshape

        return TorchReshape(p.shape)  # the -1 kept: a symbolic input axis flows through, as in the checker

    @classmethod
    def emit(cls, p: ReshapeParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        # 0 copies the input's (dynamic) batch axis (ONNX Reshape, allowzero=0); the -1 is inferred per call
        return g.op("Reshape", [g.x, g.const("shape", np.array([0, *p.shape], np.int64))])


class SliceParams(LayerParams):
    dim: int = Field(description="the per-sample axis sliced")
    start: int = 0
    end: int | None = Field(None, description="exclusive; none = to the end; negative counts from the end")
    step: PositiveInt = 1


def _slice_length(n: int, start: int, end: int | None, step: int) -> int:
    """len(range(n)[start:end:step]) for step > 0 (Python's slice.indices), written as comparisons
    and arithmetic so that a symbolic `n` keeps its expression and records its guards."""
    def bound(i: int) -> int:
        if i < 0:  # counts from the end, then clipped at 0
            i += n
            return i if i > 0 else 0
        return i if i < n else n

    first, stop = bound(start), n if end is None else bound(end)
    return (stop - first + step - 1) // step if stop > first else 0


class Slice(_View):
    name = "slice"
    Params = SliceParams
    doc = "Keeps `start:end:step` of one axis, as Python's slicing (ResNet option A's spatial subsampling)."
    shape_rule = "axis `dim` becomes len(range(n)[start:end:step])"
    example = {"dim": 0, "start": 1, "step": 2}

    @classmethod
    def infer(cls, p: SliceParams, x: Shape) -> Shape:
        a = axis(p.dim, x)
        n = _slice_length(x[a], p.start, p.end, p.step)
        if n == 0:
            raise ShapeError(f"slice {p.start}:{'' if p.end is None else p.end}:{p.step} of an axis of "
                             f"{x[a]} is empty", "start", "AS202")
        return x[:a] + (n,) + x[a + 1:]

    @classmethod
    def lower(cls, p: SliceParams, x: Shape, y: Shape):
        from ..nn import Slice as TorchSlice

        return TorchSlice(p.dim % len(x) + 1, p.start, p.end, p.step)  # Python's bounds: right on a symbolic axis too

    @classmethod
    def emit(cls, p: SliceParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        # ONNX Slice clamps negative and out-of-range bounds as Python does for a positive step
        bounds = ((p.start, "start"), (INT64_MAX if p.end is None else p.end, "end"),
                  (p.dim % len(x.shape) + 1, "axis"), (p.step, "step"))
        return g.op("Slice", [g.x, *(g.const(f"{name}", np.array([v], np.int64)) for v, name in bounds)])


class SelectParams(LayerParams):
    dim: int = Field(description="the per-sample axis removed")
    index: int = Field(description="the position kept; negative counts from the end")


class Select(_View):
    name = "select"
    Params = SelectParams
    doc = "Takes one position of an axis and drops the axis (ViT's class token: `select: {dim: 0, index: 0}`)."
    shape_rule = "axis `dim` removed"
    example = {"dim": 1, "index": -1}

    @classmethod
    def infer(cls, p: SelectParams, x: Shape) -> Shape:
        a = axis(p.dim, x)
        if not -x[a] <= p.index < x[a]:
            raise ShapeError(f"index {p.index} is out of range for an axis of {x[a]}", "index")
        return x[:a] + x[a + 1:]

    @classmethod
    def output_type(cls, p: SelectParams, x: TensorType) -> TensorType:
        """The layout loses the selected axis's letter: ViT's (T, F) at token 0 is (F); one channel of an
        image (C, H, W) is HW, which kinds that need a sequence (TF) refuse."""
        a = axis(p.dim, x)
        shape = cls.infer(p, x.shape)
        keep = [i for i in range(len(x.shape)) if i != a]
        return TensorType(shape, x.dtype, x.permuted(keep) if shape else "")

    @classmethod
    def lower(cls, p: SelectParams, x: Shape, y: Shape):
        from ..nn import Select as TorchSelect

        return TorchSelect(p.dim % len(x) + 1, p.index)  # a negative index counts from the end at any length

    @classmethod
    def emit(cls, p: SelectParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        # Gather with a scalar index drops the axis; negative indices count from the end (opset >= 11)
        return g.op("Gather", [g.x, g.const("index", np.array(p.index, np.int64))], axis=p.dim % len(x.shape) + 1)


class PadParams(LayerParams):
    padding: Padding = Field((0, 0, 0, 0), description="spatial: int, [h, w] or [top, bottom, left, right]")
    channels: _int_list("[before, after]", 2) = Field((0, 0), description="[before, after]: zero channels (ResNet option A)")
    mode: Literal["constant", "reflect", "replicate"] = "constant"
    value: float = 0.0

    @field_validator("padding")
    @classmethod
    def _explicit(cls, padding: Any) -> Any:
        if padding == "same":
            raise ValueError("pad takes explicit sizes, not 'same'")
        return padding

    @field_validator("channels")
    @classmethod
    def _non_negative(cls, channels: tuple[int, ...]) -> tuple[int, ...]:
        if min(channels) < 0:
            raise ValueError(f"channels padding must be >= 0, got {list(channels)}")
        return channels

    @field_validator("mode")
    @classmethod
    def _channels_need_constant(cls, mode: str, info: ValidationInfo) -> str:
        if mode != "constant" and info.data.get("channels", (0, 0)) != (0, 0):
            raise ValueError(f"channel padding needs mode 'constant' (PyTorch pads only H and W in {mode} mode)")
        return mode


class Pad(LayerKind):
    name = "pad"
    Params = PadParams
    doc = "Pads an image with a constant, its reflection or its edge; constant mode can also add channels."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "none (data movement)"
    shape_rule = "(C + before + after, H + top + bottom, W + left + right)"
    example = {"padding": [1, 0, 2, 1], "mode": "reflect"}

    @classmethod
    def infer(cls, p: PadParams, x: Shape) -> Shape:
        t, b, l, r = p.padding
        if p.mode == "reflect" and (max(t, b) >= x[1] or max(l, r) >= x[2]):
            raise ShapeError(f"reflect padding {list(p.padding)} must be smaller than the input's {x[1]}x{x[2]}",
                             "padding")
        return (x[0] + sum(p.channels), x[1] + t + b, x[2] + l + r)

    @classmethod
    def cost(cls, p: PadParams, x: Shape, y: Shape) -> Cost:
        return Cost()

    @classmethod
    def lower(cls, p: PadParams, x: Shape, y: Shape):
        from ..nn import Pad as TorchPad

        t, b, l, r = p.padding
        pads = (l, r, t, b) + ((p.channels[0], p.channels[1]) if p.channels != (0, 0) else ())  # F.pad: last axis first
        return TorchPad(pads, p.mode, p.value)

    @classmethod
    def emit(cls, p: PadParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        (t, b, l, r), (before, after) = p.padding, p.channels
        pads = g.const("pads", np.array([0, before, t, l, 0, after, b, r], np.int64))  # all begins, then all ends
        if p.mode != "constant":  # F.pad's reflect (edge not repeated) is ONNX's reflect; replicate is edge
            return g.op("Pad", [g.x, pads], mode="edge" if p.mode == "replicate" else "reflect")
        return g.op("Pad", [g.x, pads, g.const("value", np.array(p.value, np.float32))], mode="constant")


class ChannelShuffleParams(LayerParams):
    groups: PositiveInt


class ChannelShuffle(_View):
    name = "channel_shuffle"
    Params = ChannelShuffleParams
    doc = "Interleaves the channels of `groups` groups (ShuffleNet, Zhang et al. 2018 §3.1)."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    example = {"groups": 1}  # the generated tests' images have 3 or 4 channels; VARIANTS in test_emit shuffle

    @classmethod
    def infer(cls, p: ChannelShuffleParams, x: Shape) -> Shape:
        if x[0] % p.groups:
            raise ShapeError(f"groups={p.groups} must divide the {x[0]} channels", "groups")
        return x

    @classmethod
    def lower(cls, p: ChannelShuffleParams, x: Shape, y: Shape):
        from ..nn import ChannelShuffle as TorchShuffle

        return TorchShuffle(p.groups)

    @classmethod
    def emit(cls, p: ChannelShuffleParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        # the shuffle is a fixed permutation of the channels: output channel k*groups + i is input channel
        # i*(C/groups) + k (Zhang et al. 2018 §3.1). One Gather copies whole H x W planes and leaves H and W
        # dynamic; the reshape-transpose-reshape form needs three nodes and the sizes of H and W.
        c = x.shape[0]
        order = np.arange(c).reshape(p.groups, c // p.groups).T.reshape(-1)
        return g.op("Gather", [g.x, g.const("order", order.astype(np.int64))], axis=1)


class UpsampleParams(LayerParams):
    scale: Size2 | None = Field(None, description="integer factor, or [h, w]")
    size: Size2 | None = Field(None, description="the output's [h, w]")
    to: str | None = Field(None, description="the name of an earlier image whose H x W the output takes (FPN, U-Net)")
    mode: Literal["nearest", "bilinear"] = "nearest"
    align_corners: bool | None = Field(None, description="bilinear only; default false, as PyTorch")

    @field_validator("align_corners")
    @classmethod
    def _bilinear_only(cls, align_corners: bool | None, info: ValidationInfo) -> bool | None:
        if align_corners is not None and info.data.get("mode", "bilinear") != "bilinear":
            raise ValueError("align_corners applies to mode 'bilinear' only")
        return align_corners

    @model_validator(mode="after")
    def _scale_or_size(self) -> UpsampleParams:
        if sum(v is not None for v in (self.scale, self.size, self.to)) != 1:
            raise ValueError("give exactly one of `scale`, `size` and `to`")
        return self


class Upsample(LayerKind):
    name = "upsample"
    Params = UpsampleParams
    doc = ("Resizes an image by an integer `scale`, to a `size`, or to the H x W of another image named by "
           "`to` (`upsample: {to: skip}`, an FPN/U-Net decoder; the other image is a second input): nearest or "
           "bilinear (FCN, U-Net, FPN).")
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "nearest: none (a copy); bilinear: 7 per output element (3 lerps of 2 flops + 1; a counting convention)"
    shape_rule = "(C, H*scale_h, W*scale_w), (C, *size), or (C, H_to, W_to)"
    example = {"scale": 2, "mode": "bilinear"}
    reference_fields = ("to",)

    @classmethod
    def output_types(cls, p: UpsampleParams, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        if p.to is None:
            return super().output_types(p, xs)
        x, ref = xs
        if ref.axes != "CHW":
            raise ShapeError(f"`to` names '{p.to}', a {ref} tensor; upsample takes H x W from an image (C, H, W) "
                             f"(layout CHW), not layout {ref.axes}", "to")
        return (TensorType((x.shape[0], ref.shape[1], ref.shape[2]), x.dtype, x.layout),)

    @classmethod
    def infer(cls, p: UpsampleParams, x: Shape) -> Shape:
        if p.size is not None:
            return (x[0],) + p.size
        return (x[0], x[1] * p.scale[0], x[2] * p.scale[1])

    @classmethod
    def cost(cls, p: UpsampleParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=7 * numel(y) if p.mode == "bilinear" else 0)

    @classmethod
    def brief(cls, p: UpsampleParams) -> str:
        return f"{p.mode} upsample " + (f"x{p.scale[0]}" if p.scale else f"to {p.size[0]}x{p.size[1]}" if p.size
                                         else f"to {p.to}")

    @classmethod
    def lower(cls, p: UpsampleParams, x: Shape, y: Shape):
        from torch import nn

        corners = bool(p.align_corners) if p.mode == "bilinear" else None
        if p.to is not None:
            from ..nn import UpsampleTo

            return UpsampleTo(p.mode, corners)
        if p.size is not None:
            return nn.Upsample(size=p.size, mode=p.mode, align_corners=corners)
        return nn.Upsample(scale_factor=tuple(float(s) for s in p.scale), mode=p.mode, align_corners=corners)

    # Emission follows F.interpolate's source coordinates (aten/src/ATen/native/UpSample.h): nearest takes
    # floor(dst * scale), bilinear (dst + 0.5) * scale - 0.5 clamped at 0, or dst * scale with
    # align_corners, where scale = in/out for a size, 1/factor for a scale, (in-1)/(out-1) for corners.
    @classmethod
    def emit(cls, p: UpsampleParams, x: TensorType, y: TensorType, g) -> str:
        static = all(isinstance(d, int) for dims in g.dims for d in dims[2:])  # `to`: the reference's too
        scales = [cls._scale(p, n, out, s) for n, out, s in zip(x.shape[1:], y.shape[1:], p.scale or (None, None))]
        if all(_dyadic(s) for s in scales) and (static or p.scale and not p.align_corners):
            return cls._resize(p, g)
        # bilinear sums in float32 in a float16 model too, rounded once, as torch's kernel (its opmath type)
        v = g.as_float32(g.x) if p.mode == "bilinear" else g.x
        # W first, on the fewer input rows; H then gathers whole rows, contiguous copies (3x faster at FCN's head size)
        for axis in (3, 2):
            n, out, s = x.shape[axis - 1], y.shape[axis - 1], p.scale[axis - 2] if p.scale else None
            if static and n == out:
                continue  # torch copies an axis whose size is kept
            v = _resample_static(p, g, v, axis, n, out, s) if static else _resample_dynamic(p, g, v, axis, out, s)
        # `to` at a dynamic size: torch's taps from the reference's Shape (a Resize rounds otherwise)
        return g.as_data(v) if p.mode == "bilinear" else v

    @classmethod
    def _scale(cls, p: UpsampleParams, n: int, out: int, factor: int | None) -> Fraction:
        """torch's coordinate scale at the nominal size, as an exact fraction."""
        if p.mode == "bilinear" and p.align_corners:
            return Fraction(n - 1, out - 1) if out > 1 else Fraction(0)
        return Fraction(1, factor) if factor else Fraction(n, out)

    @classmethod
    def _resize(cls, p: UpsampleParams, g) -> str:
        """One Resize, the fast form, where its coordinates equal torch's exactly: a power-of-two scale
        makes x / (out/in) and x * (in/out) the same float. Sizes, not float scales: the float16 export
        converts float constants, which Resize's scales may not be."""
        import numpy as np

        shape = g.op("Shape", [g.x])
        if p.scale:
            sizes = g.op("Mul", [shape, g.const("factors", np.array([1, 1, *p.scale], np.int64))])
        else:
            zero, two = g.const("zero", np.array([0], np.int64)), g.const("two", np.array([2], np.int64))
            batch_channels = g.op("Slice", [shape, zero, two])
            if p.to is not None:  # the reference's H x W, read from its Shape
                spatial = g.op("Slice", [g.op("Shape", [g.xs[1]]), two, g.const("four", np.array([4], np.int64))])
            else:
                spatial = g.const("size", np.array(p.size, np.int64))
            sizes = g.op("Concat", [batch_channels, spatial], axis=0)
        if p.mode == "nearest":
            how = {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        else:
            how = {"mode": "linear",
                   "coordinate_transformation_mode": "align_corners" if p.align_corners else "half_pixel"}
        return g.op("Resize", [g.x, "", "", sizes], **how)


def _dyadic(q: Fraction) -> bool:
    """A power of two: multiplying by it or dividing by its inverse is exact in floating point."""
    return q > 0 and (q.numerator & (q.numerator - 1)) == 0 and (q.denominator & (q.denominator - 1)) == 0


def _taps(p: UpsampleParams, n: int, out: int, factor: int | None) -> tuple[Any, Any, Any]:
    """torch's source indices and weights along one axis in its float32 arithmetic (UpSample.h
    area_pixel_compute_source_index, guard_index_and_lambda; nearest_neighbor_compute_source_index):
    lo, hi and the weight of hi, or the index alone (hi, weight None) for nearest."""
    import numpy as np

    f32, dst = np.float32, np.arange(out)
    if p.mode == "bilinear" and p.align_corners:
        src = dst.astype(f32) * (f32(n - 1) / f32(out - 1) if out > 1 else f32(0))
    else:
        scale = f32(1.0 / factor) if factor else f32(n) / f32(out)
        if p.mode == "nearest":
            return np.minimum(np.floor(dst.astype(f32) * scale).astype(np.int64), n - 1), None, None
        # scale * (dst + 0.5) - 0.5 is one fused multiply-add in torch's kernel: exact in float64, rounded once
        src = np.maximum((np.float64(scale) * (dst + 0.5) - 0.5).astype(f32), f32(0))
    lo = np.minimum(np.floor(src).astype(np.int64), n - 1)
    return lo, np.minimum(lo + 1, n - 1), np.clip(src - lo.astype(f32), f32(0), f32(1))


def _lerp(g, v: str, axis: int, lo: str, hi: str, w_lo: str, w_hi: str) -> str:
    """v[lo] * w_lo + v[hi] * w_hi along `axis`, torch's weighted sum of the two taps (in float32)."""
    return g.op("Add", [g.op("Mul", [g.op("Gather", [v, lo], axis=axis), w_lo]),
                        g.op("Mul", [g.op("Gather", [v, hi], axis=axis), w_hi])])


def _resample_static(p: UpsampleParams, g, v: str, axis: int, n: int, out: int, factor: int | None) -> str:
    """One axis of a static size: torch's indices and weights as constants, Gather and a weighted sum.
    The weights are rounded to the data's type, as torch holds them, w_lo = 1 - w_hi rounded there too
    (UpSampleKernel.cpp compute_source_index_and_lambda), and stay float32 (`exact`) for the sum."""
    import numpy as np

    lo, hi, w = _taps(p, n, out, factor)
    lo_name = g.const(f"lo{axis}", lo)
    if w is None:
        return g.op("Gather", [v, lo_name], axis=axis)
    along = (-1,) + (1,) * (3 - axis)  # the weights broadcast along `axis` of (N, C, H, W)
    w_hi = w.astype(g.dtype).astype(np.float32)
    w_lo = (np.float32(1) - w_hi).astype(g.dtype).astype(np.float32)
    return _lerp(g, v, axis, lo_name, g.const(f"hi{axis}", hi),
                 g.exact(f"w_lo{axis}", w_lo.reshape(along)), g.exact(f"w_hi{axis}", w_hi.reshape(along)))


def _resample_dynamic(p: UpsampleParams, g, v: str, axis: int, out: int, factor: int | None) -> str:
    """One axis of a dynamic size: `_taps` computed in the graph from the input's size, in the same
    float32 operations (float64 for the fused multiply-add), whose constants are `exact`: float32 in
    a float16 model too, where torch also computes the indices and weights in float32 (its opmath type,
    UpSampleKernel.cpp HelperInterpLinear::compute_indices_weights)."""
    import numpy as np

    def const(name: str, value: Any, dtype: Any) -> str:
        return g.const(f"{name}{axis}", np.array(value, dtype))

    def exact(name: str, value: Any, dtype: Any = np.float32) -> str:
        return g.exact(f"{name}{axis}", np.array(value, dtype))

    f32, i64 = 1, 7  # onnx.TensorProto's FLOAT and INT64
    n = g.op("Gather", [g.op("Shape", [g.x]), const("axis", axis, np.int64)])
    if p.to is not None:  # the reference's size along this axis
        size = g.op("Gather", [g.op("Shape", [g.xs[1]]), const("axis", axis, np.int64)])
    else:
        size = const("size", out, np.int64) if factor is None else g.op("Mul", [n, const("factor", factor, np.int64)])
    dst = g.op("Cast", [g.op("Range", [const("zero", 0, np.int64), size, const("one", 1, np.int64)])], to=f32)
    nf, sizef, one = g.op("Cast", [n], to=f32), g.op("Cast", [size], to=f32), exact("onef", 1)
    if p.mode == "bilinear" and p.align_corners:
        scale = g.op("Div", [g.op("Sub", [nf, one]), g.op("Max", [g.op("Sub", [sizef, one]), one])])
        src = g.op("Mul", [dst, scale])
    else:
        scale = exact("scale", 1.0 / factor) if factor else g.op("Div", [nf, sizef])
        if p.mode == "nearest":
            src = g.op("Mul", [dst, scale])
        else:
            half = g.op("Cast", [g.op("Add", [dst, exact("half", 0.5)])], to=11)  # 11: DOUBLE
            fma = g.op("Sub", [g.op("Mul", [half, g.op("Cast", [scale], to=11)]), exact("halfd", 0.5, np.float64)])
            src = g.op("Max", [g.op("Cast", [fma], to=f32), exact("zerof", 0)])
    last = g.op("Sub", [n, const("one", 1, np.int64)])
    lo = g.op("Min", [g.op("Cast", [g.op("Floor", [src])], to=i64), last])
    if p.mode == "nearest":
        return g.op("Gather", [v, lo], axis=axis)
    hi = g.op("Min", [g.op("Add", [lo, const("one", 1, np.int64)]), last])
    w = g.op("Clip", [g.op("Sub", [src, g.op("Cast", [lo], to=f32)]), exact("zerof", 0), one])
    if axis == 2:
        w = g.op("Unsqueeze", [w, const("last", [1], np.int64)])
    w = g.as_float32(g.as_data(w))  # rounded to the data's type, as `_resample_static`
    return _lerp(g, v, axis, lo, hi, g.as_float32(g.as_data(g.op("Sub", [one, w]))), w)


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape))
