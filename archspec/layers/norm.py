"""Normalisation: batch norm (Ioffe & Szegedy 2015), local response norm (AlexNet §3.3), layer,
group and instance norm."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import Cost, LayerKind, LayerParams, PositiveInt, Shape, ShapeError, TensorType, numel


class BatchNormParams(LayerParams):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)


def _channels(x: TensorType) -> int:
    """The axis batch norm normalises, from the layout (not the rank): an image's channels, the
    features of a sequence or a vector."""
    axis = x.channel_axis
    if axis is None:
        raise ShapeError(f"batchnorm normalises channels (C) or features (F); a {x.axes} input has neither")
    if x.axes not in ("CHW", "TF", "FT", "F"):  # BatchNorm1d/2d read channels at axis 1 of (N, C, ...)
        raise ShapeError(f"batchnorm normalises a (C, H, W), (T, F) or (F) input; a {x} input in layout {x.axes} is "
                         "neither: permute its axes back first")
    return axis


class BatchNorm(LayerKind):
    name = "batchnorm"
    Params = BatchNormParams
    doc = ("Batch normalisation over the channels of an image (C, H, W): BatchNorm2d; over the features of "
           "a vector (F): BatchNorm1d; over the features of a sequence (T, F): BatchNorm1d on (N, F, T), "
           "as PyTorch normalises a sequence's features, statistics over batch and time.")
    input_rank = (1, 2, 3)
    input_desc = "(C, H, W), (T, F) or (F)"
    flops_rule = "2 per element (inference: one scale and one shift)"
    example = {}
    zero_init = True

    @classmethod
    def output_types(cls, p: BatchNormParams, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        _channels(xs[0])
        return (xs[0],)

    @classmethod
    def cost_n(cls, p: BatchNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        x = xs[0]  # weight and bias; running stats are buffers
        return Cost(params=2 * x.shape[_channels(x)], flops=2 * numel(x.shape))

    @classmethod
    def lower_n(cls, p: BatchNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from torch import nn

        x = xs[0]
        axis, c = _channels(x), x.shape[_channels(x)]
        if axis:  # (T, F): BatchNorm1d on (N, F, T), moved there and back
            from ..nn import AxisBatchNorm

            return AxisBatchNorm(c, axis + 1, eps=p.eps, momentum=p.momentum)
        return (nn.BatchNorm2d if x.axes == "CHW" else nn.BatchNorm1d)(c, eps=p.eps, momentum=p.momentum)

    @classmethod
    def init(cls, module, p: BatchNormParams, scheme: str) -> bool:
        if scheme != "zero":
            return False
        from torch import nn

        nn.init.zeros_(module.weight)  # gamma = 0: the residual block starts as the identity
        return True

    @classmethod
    def tensors_n(cls, p: BatchNormParams, xs: tuple[TensorType, ...],
                  ys: tuple[TensorType, ...]) -> dict[str, tuple[Shape, str]]:
        c = (xs[0].shape[_channels(xs[0])],)
        return {"weight": (c, "float32"), "bias": (c, "float32"), "running_mean": (c, "float32"),
                "running_var": (c, "float32"), "num_batches_tracked": ((), "int64")}

    @classmethod
    def initial_n(cls, p: BatchNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], scheme: str, rng):
        import numpy as np

        c = xs[0].shape[_channels(xs[0])]
        return {"weight": (np.zeros if scheme == "zero" else np.ones)(c, np.float32), "bias": np.zeros(c, np.float32),
                "running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32),
                "num_batches_tracked": np.zeros((), np.int64)}

    @classmethod
    def emit(cls, p: BatchNormParams, x: TensorType, y: TensorType, g) -> str:
        # inference form: (x - running_mean) / sqrt(running_var + eps) * weight + bias, on axis 1; a
        # sequence's features move there (Transpose) and back, as the PyTorch lowering does
        axis, rank = _channels(x) + 1, len(x.shape) + 1  # + the batch axis
        perm = [0, axis] + [i for i in range(1, rank) if i != axis]
        v = g.x if axis == 1 else g.op("Transpose", [g.x], perm=perm)
        v = g.op("BatchNormalization", [v] + [g.param(n) for n in ("weight", "bias", "running_mean", "running_var")],
                 epsilon=p.eps)
        return v if axis == 1 else g.op("Transpose", [v], perm=[perm.index(i) for i in range(rank)])


MAX_LRN_SIZE = 255  # PyTorch pads the channels by size - 1 in a temporary; AlexNet uses 5


class LRNParams(LayerParams):
    size: Annotated[int, Field(gt=0, le=MAX_LRN_SIZE)] = 5
    alpha: float = Field(1e-4, ge=0)
    beta: float = Field(0.75, ge=0)
    k: float = Field(1.0, ge=0)


class LocalResponseNorm(LayerKind):
    name = "lrn"
    Params = LRNParams
    doc = "Local response normalisation across `size` neighbouring channels (AlexNet, VGG A-LRN)."
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "2*size + 3 per element (squares and sums over the window, then scale, power, divide)"
    example = {"size": 3}

    @classmethod
    def cost(cls, p: LRNParams, x: Shape, y: Shape) -> Cost:
        return Cost(flops=(2 * p.size + 3) * numel(x))

    @classmethod
    def lower(cls, p: LRNParams, x: Shape, y: Shape):
        from torch import nn

        return nn.LocalResponseNorm(p.size, p.alpha, p.beta, p.k)

    @classmethod
    def emit(cls, p: LRNParams, x: TensorType, y: TensorType, g) -> str:
        """torch's formula (torch.nn.functional.local_response_norm): x / (k + alpha * avg(x^2))^beta,
        the average over channels [c - size//2, c + (size-1)//2], zero-padded. Not ONNX's LRN operator:
        its window differs for even sizes (one channel later), and onnxruntime 1.32's LRN kernel took
        4x as long as this form on AlexNet's LRN inputs (96x55x55, batch 8, one thread: 50.6 vs 12.7 ms;
        PyTorch 25.7 ms), which made alexnet_paper slower in onnxruntime (tools/bench_lrn.py)."""
        import numpy as np

        sq = g.op("Unsqueeze", [g.op("Mul", [g.x, g.x]), g.const("axis1", np.array([1], np.int64))])
        pads = g.const("pads", np.array([0, 0, p.size // 2, 0, 0, 0, 0, (p.size - 1) // 2, 0, 0], np.int64))
        avg = g.op("AveragePool", [g.op("Pad", [sq, pads])], kernel_shape=[p.size, 1, 1])
        avg = g.op("Squeeze", [avg, g.const("axis1", np.array([1], np.int64))])
        scaled = g.op("Add", [g.op("Mul", [avg, g.const("alpha", np.array(p.alpha, np.float32))]),
                              g.const("k", np.array(p.k, np.float32))])
        return g.op("Div", [g.x, g.op("Pow", [scaled, g.const("beta", np.array(p.beta, np.float32))])])


class LayerNormParams(LayerParams):
    eps: float = Field(1e-5, gt=0)
    affine: bool = True  # a learned scale and shift per normalised feature (elementwise_affine)
    bias: bool = True  # the shift, when affine (torch >= 2.1 `bias`)
    dim: int | None = Field(None, description="the per-sample axis normalised; default: by the input's layout, "
                            "the channels of an image (C, H, W), the features of a sequence or vector")


def _norm_axis(p: LayerNormParams, x: TensorType) -> int:
    """The normalised per-sample axis, non-negative: `dim`, or the layout's channels or features."""
    rank = len(x.shape)
    if p.dim is None:
        return x.channel_axis_or_error("layernorm (without `dim`)")
    if not -rank <= p.dim < rank:
        raise ShapeError(f"dim={p.dim} is out of range for a rank-{rank} input", "dim")
    return p.dim % rank


class LayerNorm(LayerKind):
    name = "layernorm"
    sample_statistics = True
    Params = LayerNormParams
    doc = ("Layer normalisation (Ba et al. 2016) over one axis, by default the one the input's layout "
           "names: the features of tokens (T, F) or (F), the channels of an image (C, H, W) at every "
           "position, as ConvNeXt's LayerNorm2d does.")
    flops_rule = "5 per element (mean, variance, subtract, divide, scale-shift; a counting convention)"
    shape_rule = "output shape = input shape"
    example = {}

    @classmethod
    def output_types(cls, p: LayerNormParams, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        if not xs[0].shape:
            raise ShapeError("layernorm needs at least one axis")
        _norm_axis(p, xs[0])
        return (xs[0],)

    @classmethod
    def cost_n(cls, p: LayerNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        x = xs[0]
        n = x.shape[_norm_axis(p, x)]
        return Cost(params=(n + (n if p.bias else 0)) if p.affine else 0, flops=5 * numel(x.shape))

    @classmethod
    def lower_n(cls, p: LayerNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from torch import nn

        from ..nn import AxisLayerNorm

        x = xs[0].shape
        axis = _norm_axis(p, xs[0])
        args = dict(eps=p.eps, elementwise_affine=p.affine, bias=p.bias)
        return nn.LayerNorm(x[axis], **args) if axis == len(x) - 1 else AxisLayerNorm(x[axis], axis + 1, **args)

    @classmethod
    def tensors_n(cls, p: LayerNormParams, xs: tuple[TensorType, ...],
                  ys: tuple[TensorType, ...]) -> dict[str, tuple[Shape, str]]:
        n = (xs[0].shape[_norm_axis(p, xs[0])],)
        return {"weight": (n, "float32"), **({"bias": (n, "float32")} if p.bias else {})} if p.affine else {}

    @classmethod
    def initial_n(cls, p: LayerNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], scheme: str, rng):
        import numpy as np

        n = xs[0].shape[_norm_axis(p, xs[0])]  # nn.LayerNorm's reset_parameters: weight 1, bias 0
        return {k: (np.ones if k == "weight" else np.zeros)(n, np.float32) for k in cls.tensors_n(p, xs, ys)}

    @classmethod
    def emit(cls, p: LayerNormParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        axis, rank = _norm_axis(p, x) + 1, len(x.shape) + 1  # + the batch axis
        n = x.shape[axis - 1]
        if g.opset >= 17:
            # one fused LayerNormalization kernel; it normalises the trailing axes, so a channel axis
            # (ConvNeXt's LayerNorm2d) moves last and back: with the two Transposes it runs 1.7-2.9x
            # faster than the primitive form at batch 1 and as fast at batch 8 (tools/bench_layernorm.py)
            last = axis == rank - 1
            perm = [i for i in range(rank) if i != axis] + [axis]
            v = g.x if last else g.op("Transpose", [g.x], perm=perm)
            scale = g.param("weight") if p.affine else g.const("ones", np.ones(n, np.float32))
            v = g.op("LayerNormalization", [v, scale] + ([g.param("bias")] if p.affine and p.bias else []),
                     axis=-1, epsilon=p.eps)
            return v if last else g.op("Transpose", [v], perm=[int(i) for i in np.argsort(perm)])
        # below 17, the primitive form of the ONNX LayerNormalization function body (biased variance),
        # in the order onnxruntime's LayerNormFusion fuses back into one kernel on a last axis:
        # (x - mean) / sqrt(mean((x - mean)^2) + eps) * weight + bias
        d = g.op("Sub", [g.x, g.reduce("ReduceMean", g.x, [axis])])
        var = g.reduce("ReduceMean", g.op("Pow", [d, g.const("two", np.array(2.0, np.float32))]), [axis])
        std = g.op("Sqrt", [g.op("Add", [var, g.const("eps", np.array(p.eps, np.float32))])])
        v = g.op("Div", [d, std])
        if not p.affine:
            return v
        along = (n,) + (1,) * (rank - 1 - axis)  # broadcast along `axis`
        v = g.op("Mul", [v, g.param("weight") if len(along) == 1 else
                         g.const("weight_axis", g.array("weight").reshape(along))])
        if p.bias:
            v = g.op("Add", [v, g.param("bias") if len(along) == 1 else
                             g.const("bias_axis", g.array("bias").reshape(along))])
        return v


class GroupNormParams(LayerParams):
    groups: PositiveInt
    eps: float = Field(1e-5, gt=0)
    affine: bool = True


class GroupNorm(LayerKind):
    name = "groupnorm"
    sample_statistics = True
    Params = GroupNormParams
    doc = ("Group normalisation (Wu & He 2018): channels split into `groups`, each normalised over (C/groups, H, W); "
           "on a sequence (T, F) the features are the channels, as nn.GroupNorm on (N, F, T).")
    input_rank = (2, 3)
    input_desc = "(C, H, W) or (T, F)"
    flops_rule = "5 per element (mean, variance, subtract, divide, scale-shift; a counting convention)"
    example = {"groups": 2}

    @classmethod
    def output_types(cls, p: GroupNormParams, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        x = xs[0]
        c = x.shape[x.channel_axis_or_error("groupnorm")]
        if c % p.groups:
            raise ShapeError(f"groups={p.groups} must divide the {c} {_what(x)}", "groups")
        if c // p.groups * (numel(x.shape) // c) == 1:  # torch.nn.functional.group_norm's _verify_batch_size
            raise ShapeError(f"each of the {p.groups} groups of a {x} input holds one value: "
                             "its normalisation is 0, and PyTorch refuses it at batch 1", "groups")
        return (x,)

    @classmethod
    def cost_n(cls, p: GroupNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        return Cost(params=2 * _width(xs[0]) if p.affine else 0, flops=5 * numel(xs[0].shape))

    @classmethod
    def lower_n(cls, p: GroupNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from torch import nn

        from ..nn import AxisGroupNorm

        axis = xs[0].channel_axis_or_error("groupnorm")
        if axis:  # (T, F): nn.GroupNorm on (N, F, T), moved there and back
            return AxisGroupNorm(p.groups, _width(xs[0]), axis + 1, eps=p.eps, affine=p.affine)
        return nn.GroupNorm(p.groups, _width(xs[0]), eps=p.eps, affine=p.affine)

    @classmethod
    def tensors_n(cls, p: GroupNormParams, xs: tuple[TensorType, ...],
                  ys: tuple[TensorType, ...]) -> dict[str, tuple[Shape, str]]:
        return _affine_tensors(p.affine, _width(xs[0]))

    @classmethod
    def initial_n(cls, p: GroupNormParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], scheme: str, rng):
        return _affine_initial(p.affine, _width(xs[0]))

    @classmethod
    def emit(cls, p: GroupNormParams, x: TensorType, y: TensorType, g) -> str:
        # (N, C, ...) -> (N, groups, rest): InstanceNormalization with unit scale normalises each
        # (sample, group) over its channels and positions in one kernel (Wu & He 2018, eq. 1), then
        # the original shape and the per-channel affine; ONNX GroupNormalization's scale is per group
        # until opset 21, and onnxruntime runs it as this same expansion. A sequence's features move
        # to axis 1 (Transpose) and back, as the PyTorch lowering does.
        import numpy as np

        axis, rank = x.channel_axis_or_error("groupnorm") + 1, len(x.shape) + 1  # + the batch axis
        perm = [0, axis] + [i for i in range(1, rank) if i != axis]
        src = g.x if axis == 1 else g.op("Transpose", [g.x], perm=perm)
        grouped = g.op("Reshape", [src, g.const("grouped", np.array([0, p.groups, -1], np.int64))])
        v = g.op("InstanceNormalization", [grouped, g.const("ones", np.ones(p.groups, np.float32)),
                                           g.const("zeros", np.zeros(p.groups, np.float32))], epsilon=p.eps)
        v = g.op("Reshape", [v, g.op("Shape", [src])])
        if p.affine:
            along = (_width(x),) + (1,) * (rank - 2)  # per channel, broadcast over positions
            v = g.op("Mul", [v, g.const("weight_axis", g.array("weight").reshape(along))])
            v = g.op("Add", [v, g.const("bias_axis", g.array("bias").reshape(along))])
        return v if axis == 1 else g.op("Transpose", [v], perm=[perm.index(i) for i in range(rank)])


def _width(x: TensorType) -> int:
    """The number of channels (an image's) or features (a sequence's) a norm scales, by the layout."""
    return x.shape[x.channel_axis_or_error("groupnorm")]


def _what(x: TensorType) -> str:
    return "channels" if x.axes[x.channel_axis_or_error("groupnorm")] == "C" else "features"


class InstanceNormParams(LayerParams):
    eps: float = Field(1e-5, gt=0)
    affine: bool = False  # PyTorch's default for InstanceNorm2d


class InstanceNorm(LayerKind):
    name = "instancenorm"
    sample_statistics = True
    Params = InstanceNormParams
    doc = ("Instance normalisation (Ulyanov et al. 2016): each channel of each sample over its own "
           "positions; no running statistics, so training and inference compute the same.")
    input_rank = (3,)
    input_desc = "(C, H, W)"
    input_layouts = ("CHW",)
    flops_rule = "5 per element (mean, variance, subtract, divide, scale-shift; a counting convention)"
    example = {"affine": True}

    @classmethod
    def infer(cls, p: InstanceNormParams, x: Shape) -> Shape:
        if numel(x[1:]) == 1:  # torch.nn.functional.instance_norm's _verify_spatial_size
            raise ShapeError(f"each channel of a {'x'.join(map(str, x))} input holds one value: its "
                             "normalisation is 0, and PyTorch refuses it")
        return x

    @classmethod
    def cost(cls, p: InstanceNormParams, x: Shape, y: Shape) -> Cost:
        return Cost(params=2 * x[0] if p.affine else 0, flops=5 * numel(x))

    @classmethod
    def lower(cls, p: InstanceNormParams, x: Shape, y: Shape):
        from torch import nn

        return nn.InstanceNorm2d(x[0], eps=p.eps, affine=p.affine)

    @classmethod
    def tensors(cls, p: InstanceNormParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        return _affine_tensors(p.affine, x[0])

    @classmethod
    def initial(cls, p: InstanceNormParams, x: Shape, y: Shape, scheme: str, rng):
        return _affine_initial(p.affine, x[0])

    @classmethod
    def emit(cls, p: InstanceNormParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        c = x.shape[0]  # without affine, ONNX's scale and bias inputs (required) are 1 and 0
        scale, bias = ((g.param("weight"), g.param("bias")) if p.affine else
                       (g.const("ones", np.ones(c, np.float32)), g.const("zeros", np.zeros(c, np.float32))))
        return g.op("InstanceNormalization", [g.x, scale, bias], epsilon=p.eps)


def _affine_tensors(affine: bool, channels: int) -> dict[str, tuple[Shape, str]]:
    """Group and instance norm's per-channel scale and shift, when affine."""
    return {"weight": ((channels,), "float32"), "bias": ((channels,), "float32")} if affine else {}


def _affine_initial(affine: bool, channels: int) -> dict:
    """As nn.GroupNorm/InstanceNorm2d's reset_parameters: weight 1, bias 0."""
    import numpy as np

    return {"weight": np.ones(channels, np.float32), "bias": np.zeros(channels, np.float32)} if affine else {}
