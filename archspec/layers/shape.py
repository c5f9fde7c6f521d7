"""Tensor-shape plumbing (per-sample axes, batch excluded): permute, transpose, reshape, slice,
select, pad, channel shuffle, and resampling (upsample). None has parameters or MACs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, ValidationInfo, WithJsonSchema, field_validator, model_validator

from .base import Cost, LayerKind, LayerParams, Padding, PositiveInt, Shape, ShapeError, Size2, _is_int, numel


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


def axis(dim: int, rank: int, field: str = "dim") -> int:
    """A per-sample axis, negative counting from the end, as a non-negative index."""
    if not -rank <= dim < rank:
        raise ShapeError(f"{field}={dim} is out of range for a rank-{rank} input (axes 0..{rank - 1})", field)
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
    doc = "Reorders the per-sample axes (image <-> token layouts, ConvNeXt's channels-last blocks)."
    shape_rule = "axis i of the output is axis dims[i] of the input"
    example = {"dims": [1, 2, 0]}

    @classmethod
    def infer(cls, p: PermuteParams, x: Shape) -> Shape:
        dims = [axis(d, len(x), "dims") for d in p.dims]
        if sorted(dims) != list(range(len(x))):
            raise ShapeError(f"dims {list(p.dims)} is not a permutation of the {len(x)} axes of a {_fmt(x)} input", "dims")
        return tuple(x[d] for d in dims)

    @classmethod
    def lower(cls, p: PermuteParams, x: Shape, y: Shape):
        from ..nn import Permute as TorchPermute

        return TorchPermute([0] + [d % len(x) + 1 for d in p.dims])


class TransposeParams(LayerParams):
    dims: _int_list("two axes, [a, b]", 2) = Field(description="the two per-sample axes swapped")


class Transpose(_View):
    name = "transpose"
    Params = TransposeParams
    doc = "Swaps two per-sample axes, e.g. (T, F) -> (F, T)."
    shape_rule = "the two axes `dims` exchanged"
    example = {"dims": [0, 2]}

    @classmethod
    def infer(cls, p: TransposeParams, x: Shape) -> Shape:
        a, b = (axis(d, len(x), "dims") for d in p.dims)
        out = list(x)
        out[a], out[b] = x[b], x[a]
        return tuple(out)

    @classmethod
    def lower(cls, p: TransposeParams, x: Shape, y: Shape):
        from ..nn import Permute as TorchPermute

        order = list(range(len(x)))
        a, b = (d % len(x) for d in p.dims)
        order[a], order[b] = order[b], order[a]
        return TorchPermute([0] + [d + 1 for d in order])


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

        return TorchReshape(y)


class SliceParams(LayerParams):
    dim: int = Field(description="the per-sample axis sliced")
    start: int = 0
    end: int | None = Field(None, description="exclusive; none = to the end; negative counts from the end")
    step: PositiveInt = 1


class Slice(_View):
    name = "slice"
    Params = SliceParams
    doc = "Keeps `start:end:step` of one axis, as Python's slicing (ResNet option A's spatial subsampling)."
    shape_rule = "axis `dim` becomes len(range(n)[start:end:step])"
    example = {"dim": 0, "start": 1, "step": 2}

    @classmethod
    def infer(cls, p: SliceParams, x: Shape) -> Shape:
        a = axis(p.dim, len(x))
        n = len(range(x[a])[p.start:p.end:p.step])
        if n == 0:
            raise ShapeError(f"slice {p.start}:{'' if p.end is None else p.end}:{p.step} of an axis of "
                             f"{x[a]} is empty", "start", "AS202")
        return x[:a] + (n,) + x[a + 1:]

    @classmethod
    def lower(cls, p: SliceParams, x: Shape, y: Shape):
        from ..nn import Slice as TorchSlice

        a = p.dim % len(x)
        start, end, _ = slice(p.start, p.end, p.step).indices(x[a])  # static bounds: ONNX Slice wants them
        return TorchSlice(a + 1, start, end, p.step)


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
        a = axis(p.dim, len(x))
        if not -x[a] <= p.index < x[a]:
            raise ShapeError(f"index {p.index} is out of range for an axis of {x[a]}", "index")
        return x[:a] + x[a + 1:]

    @classmethod
    def lower(cls, p: SelectParams, x: Shape, y: Shape):
        from ..nn import Select as TorchSelect

        a = p.dim % len(x)
        return TorchSelect(a + 1, p.index % x[a])


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


class ChannelShuffleParams(LayerParams):
    groups: PositiveInt


class ChannelShuffle(_View):
    name = "channel_shuffle"
    Params = ChannelShuffleParams
    doc = "Interleaves the channels of `groups` groups (ShuffleNet, Zhang et al. 2018 §3.1)."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    example = {"groups": 2}

    @classmethod
    def infer(cls, p: ChannelShuffleParams, x: Shape) -> Shape:
        if x[0] % p.groups:
            raise ShapeError(f"groups={p.groups} must divide the {x[0]} channels", "groups")
        return x

    @classmethod
    def lower(cls, p: ChannelShuffleParams, x: Shape, y: Shape):
        from ..nn import ChannelShuffle as TorchShuffle

        return TorchShuffle(p.groups)


class UpsampleParams(LayerParams):
    scale: Size2 | None = Field(None, description="integer factor, or [h, w]")
    size: Size2 | None = Field(None, description="the output's [h, w]")
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
        if (self.scale is None) == (self.size is None):
            raise ValueError("give exactly one of `scale` and `size`")
        return self


class Upsample(LayerKind):
    name = "upsample"
    Params = UpsampleParams
    doc = "Resizes an image by an integer `scale` or to a `size`: nearest or bilinear (FCN, U-Net, FPN)."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    flops_rule = "nearest: none (a copy); bilinear: 7 per output element (3 lerps of 2 flops + 1; a counting convention)"
    shape_rule = "(C, H*scale_h, W*scale_w) or (C, *size)"
    example = {"scale": 2, "mode": "bilinear"}

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
        return f"{p.mode} upsample " + (f"x{p.scale[0]}" if p.scale else f"to {p.size[0]}x{p.size[1]}")

    @classmethod
    def lower(cls, p: UpsampleParams, x: Shape, y: Shape):
        from torch import nn

        corners = bool(p.align_corners) if p.mode == "bilinear" else None
        if p.size is not None:
            return nn.Upsample(size=p.size, mode=p.mode, align_corners=corners)
        return nn.Upsample(scale_factor=tuple(float(s) for s in p.scale), mode=p.mode, align_corners=corners)


def _fmt(shape: Shape) -> str:
    return "x".join(map(str, shape))
