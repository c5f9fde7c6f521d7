"""Transformer pieces: multi-head self-attention (Vaswani et al. 2017, §3.2) and stochastic depth
(Huang et al. 2016), with torchvision's ViT/ConvNeXt parameter layout so their weights transfer.

MAC convention for attention: the four projections (q, k, v, out) and the two matmuls of scaled
dot-product attention (Q K^T and A V) are all multiply-accumulates. This is the count
torchvision's published vit_b_16 GFLOPS (17.56) follows, and what `FlopCounterMode`/2 reports
for the lowered module (it counts the two batched matmuls as 2*h*T*T*d FLOPs each); the softmax,
the 1/sqrt(d) scaling and the bias adds are FLOPs, not MACs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, WithJsonSchema

from .base import (
    FLOAT,
    Cost,
    LayerKind,
    LayerParams,
    PositiveInt,
    Probability,
    Shape,
    ShapeError,
    TensorType,
    numel,
    uniform,
)


class AttentionParams(LayerParams):
    heads: PositiveInt
    dim: PositiveInt | None = Field(None, description="the embedding width; must equal the input's features "
                                    "(default: taken from the input)")
    dropout: Probability = Field(0.0, description="on the attention weights, in training only (as "
                                 "nn.MultiheadAttention's `dropout`)")
    bias: bool = True
    fused: bool = Field(False, description="compute softmax(Q K^T / sqrt(d)) V with "
                        "F.scaled_dot_product_attention (fused flash / memory-efficient kernels where the device "
                        "has them); same parameters, same result to float rounding, same MAC count")


class Attention(LayerKind):
    name = "attention"
    Params = AttentionParams
    doc = ("Multi-head self-attention over a sequence of tokens, softmax(Q K^T / sqrt(d)) V per head "
           "(Vaswani et al. 2017 §3.2.2), mask-free; parameters named and laid out as nn.MultiheadAttention's "
           "(in_proj_weight 3D x D, in_proj_bias, out_proj.weight, out_proj.bias) and equal in output, so "
           "torchvision's ViT weights load as they are.")
    input_rank = (2,)
    input_desc = "(T, D)"
    input_layouts = ("TF",)
    shape_rule = "(T, D) -> (T, D); D divisible by heads"
    macs_rule = ("4*T*D^2 (q, k, v and out projections) + 2*T^2*D (Q K^T and A V over all heads): the two "
                 "attention matmuls are counted, as FlopCounterMode and torchvision's ViT GFLOPS count them")
    flops_rule = ("2*MACs + 4*T*D bias adds + T*D for the 1/sqrt(d) scale + 3*heads*T^2 for the softmax "
                  "(exp, sum, divide)")
    example = {"heads": 1}  # the generated tests feed (T, 4) and (T, 5) tokens; test_emit's VARIANTS more heads

    @classmethod
    def infer(cls, p: AttentionParams, x: Shape) -> Shape:
        width = x[-1]
        if p.dim is not None and p.dim != width:
            raise ShapeError(f"declared dim={p.dim} but the tokens have {width} features", "dim")
        if width % p.heads:
            raise ShapeError(f"heads={p.heads} does not divide the token width {width}", "heads")
        return x

    @classmethod
    def brief(cls, p: AttentionParams) -> str:
        return f"self-attention, {p.heads} heads"

    @classmethod
    def cost(cls, p: AttentionParams, x: Shape, y: Shape) -> Cost:
        t, d = x
        # Vaswani et al. 2017 Table 1: O(n^2 d) for the attention, O(n d^2) for the projections
        macs = 4 * t * d * d + 2 * t * t * d
        biases = 4 * d if p.bias else 0
        flops = 2 * macs + (4 * t * d if p.bias else 0) + t * d + 3 * p.heads * t * t
        return Cost(params=4 * d * d + biases, macs=macs, flops=flops, biases=biases)

    @classmethod
    def lower(cls, p: AttentionParams, x: Shape, y: Shape):
        from ..nn_transformer import SelfAttention

        return SelfAttention(x[-1], p.heads, dropout=p.dropout, bias=p.bias, fused=p.fused)

    @classmethod
    def init(cls, module, p: AttentionParams, scheme: str) -> bool:
        return False  # nn.MultiheadAttention's own (xavier-uniform projections, zero biases) for every scheme

    @classmethod
    def tensors(cls, p: AttentionParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        """nn.MultiheadAttention's state dict: in_proj_weight (3D, D) stacking q, k, v; out_proj (D, D)."""
        d = x[-1]
        out = {"in_proj_weight": ((3 * d, d), FLOAT)}
        if p.bias:
            out["in_proj_bias"] = ((3 * d,), FLOAT)
        out["out_proj.weight"] = ((d, d), FLOAT)
        if p.bias:
            out["out_proj.bias"] = ((d,), FLOAT)
        return out

    @classmethod
    def initial(cls, p: AttentionParams, x: Shape, y: Shape, scheme: str, rng):
        """nn.MultiheadAttention._reset_parameters: in_proj xavier U(+-sqrt(6/(D + 3D))) (Glorot & Bengio
        2010), out_proj nn.Linear's U(+-1/sqrt(D)), biases zero; the same for every scheme (`init`)."""
        import numpy as np

        d = x[-1]
        out = {"in_proj_weight": uniform(rng, (3 * d, d), float(np.sqrt(6.0 / (4 * d))))}
        if p.bias:
            out["in_proj_bias"] = np.zeros(3 * d, np.float32)
        out["out_proj.weight"] = uniform(rng, (d, d), 1.0 / float(np.sqrt(d)))
        if p.bias:
            out["out_proj.bias"] = np.zeros(d, np.float32)
        return out

    @classmethod
    def emit(cls, p: AttentionParams, x: TensorType, y: TensorType, g) -> str:
        """(N, T, D): one MatMul for q, k, v (1/sqrt(d) folded into the query rows, as the scale is
        linear: Vaswani et al. 2017 eq. 1), Split, per head (N, h, T, d) by Reshape with 0 for the batch
        and token axes (both stay dynamic), softmax(Q K^T) V as MatMul/Softmax/MatMul, heads merged and
        the out projection. Opset 17 has no Attention operator; `fused` is the same math, so the same graph."""
        import numpy as np

        d, h = x.shape[-1], p.heads
        i64 = lambda v: np.array(v, np.int64)  # noqa: E731
        scale = np.ones((3 * d, 1), np.float32)
        scale[:d] = 1.0 / np.sqrt(d // h)
        w_in = (g.array("in_proj_weight") * scale).T.copy()  # (D, 3D): x @ W^T
        qkv = g.op("MatMul", [g.x, g.const("in_proj_weight_t", w_in)])
        if p.bias:
            qkv = g.op("Add", [qkv, g.const("in_proj_bias_scaled", g.array("in_proj_bias") * scale[:, 0])])
        q, k, v = g.op("Split", [qkv, g.const("split", i64([d, d, d]))], outputs=("q", "k", "v"), axis=2)
        heads = g.const("heads", i64([0, 0, h, d // h]))  # (N, T, D) -> (N, T, h, d)
        q, k, v = (g.op("Transpose", [g.op("Reshape", [t, heads])], perm=perm)
                   for t, perm in ((q, [0, 2, 1, 3]), (k, [0, 2, 3, 1]), (v, [0, 2, 1, 3])))  # k as K^T
        weights = g.op("Softmax", [g.op("MatMul", [q, k])], axis=-1)  # (N, h, T, T)
        merged = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [weights, v])], perm=[0, 2, 1, 3]),
                                  g.const("merge", i64([0, 0, d]))])  # (N, h, T, d) -> (N, T, D)
        out = g.op("MatMul", [merged, g.const("out_proj.weight_t", g.array("out_proj.weight").T.copy())])
        return g.op("Add", [out, g.param("out_proj.bias")]) if p.bias else out


class StochasticDepthParams(LayerParams):
    p: Probability = Field(0.0, description="the probability of dropping the input (the residual branch)")
    mode: Literal["row", "batch"] = Field("row", description="row: per sample; batch: the whole batch at once "
                                          "(torchvision.ops.StochasticDepth)")


class StochasticDepth(LayerKind):
    name = "stochastic_depth"
    Params = StochasticDepthParams
    doc = ("Stochastic depth (Huang et al. 2016): in training, zeroes a residual branch with probability `p` "
           "and scales survivors by 1/(1-p), as torchvision.ops.StochasticDepth; the identity in eval mode. "
           "Put it last in a residual body.")
    flops_rule = "none at inference (the identity)"
    example = {"p": 0.2}

    @classmethod
    def cost(cls, p: StochasticDepthParams, x: Shape, y: Shape) -> Cost:
        return Cost()

    @classmethod
    def brief(cls, p: StochasticDepthParams) -> str:
        return f"drop path {p.p:g}"

    @classmethod
    def lower(cls, p: StochasticDepthParams, x: Shape, y: Shape):
        from ..nn_transformer import StochasticDepth as TorchStochasticDepth

        return TorchStochasticDepth(p.p, p.mode)

    @classmethod
    def emit(cls, p: StochasticDepthParams, x: TensorType, y: TensorType, g) -> str:
        return g.x  # the identity at inference


# --- learned free tensors --------------------------------------------------------------------------
# `parameter` is a free tensor as a value: added to the tokens by a residual (ViT's position
# embedding) or, on the graph IR (issue #12), named as an operand with `from:`. Where the operation
# that uses the tensor is not expressible yet (a concatenation along the token axis, a broadcasting
# multiply), a unary kind holds its tensor itself: `class_token` and `layer_scale`, with
# torchvision's shapes ((1, 1, D), (C, 1, 1)), so parameter counts and state-dict shapes equal
# torchvision's ViT and ConvNeXt.

class FreeTensorParams(LayerParams):
    init: Literal["zeros", "normal", "trunc_normal"] = Field(
        "zeros", description="zeros; normal(0, std); trunc_normal: normal(0, std) truncated to [-2std, 2std]")
    std: float = Field(0.02, gt=0)


def _shape(v: Any) -> Shape:
    if isinstance(v, list) and v and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v):
        return tuple(v)
    raise ValueError(f"expected a shape as a list of positive integers, e.g. [197, 768], got {v!r}")


def free_initial(shape: Shape, p: FreeTensorParams, rng: Any) -> Any:
    """Seeded values of a free tensor: zeros, N(0, std), or N(0, std) conditioned on [-2std, 2std] (the
    distribution torch.nn.init.trunc_normal_ draws by inverse CDF; here by redrawing the values outside)."""
    import numpy as np

    if p.init == "zeros":
        return np.zeros(shape, np.float32)
    z = rng.standard_normal(shape)
    if p.init == "trunc_normal":
        outside = np.abs(z) > 2.0
        while outside.any():
            z[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(z) > 2.0
    return (z * p.std).astype(np.float32)


def broadcast_over_batch(g: Any, tensor: str, rank: int) -> str:
    """A stored tensor (1, ...) of `rank` axes expanded to the input's batch (N, ...): Expand to
    [N, 1, ...], N read by Shape at run time, so the batch axis stays dynamic."""
    import numpy as np

    batch = g.op("Shape", [g.x], start=0, end=1) if g.opset >= 15 else g.op(
        "Slice", [g.op("Shape", [g.x]), g.const("zero", np.array([0], np.int64)), g.const("one", np.array([1], np.int64))])
    ones = g.const(f"ones{rank - 1}", np.ones(rank - 1, np.int64))
    return g.op("Expand", [tensor, g.op("Concat", [batch, ones], axis=0)])


ShapeList = Annotated[Shape, PlainValidator(_shape), WithJsonSchema(
    {"type": "array", "items": {"type": ["integer", "string"], "minimum": 1}, "minItems": 1})]


class ParameterParams(FreeTensorParams):
    shape: ShapeList = Field(description="per sample, without the batch axis, e.g. [197, 768]")


class Parameter(LayerKind):
    name = "parameter"
    Params = ParameterParams
    doc = ("A learned free tensor of `shape`, the same for every sample: its input's values are not read, only its "
           "batch size, over which the tensor is broadcast. Stored with a leading axis of 1, as torchvision stores "
           "ViT's position embedding (1, T, D). `- residual: {body: [{parameter: {shape: [T, D]}}]}` adds it to "
           "the tokens.")
    input_desc = "any (only its batch size is used)"
    shape_rule = "any input -> `shape`"
    flops_rule = "none (a stored tensor)"
    example = {"shape": [2, 3], "init": "trunc_normal"}

    @classmethod
    def infer(cls, p: ParameterParams, x: Shape) -> Shape:
        return p.shape

    @classmethod
    def brief(cls, p: ParameterParams) -> str:
        return "parameter " + "x".join(map(str, p.shape))

    @classmethod
    def cost(cls, p: ParameterParams, x: Shape, y: Shape) -> Cost:
        return Cost(params=numel(y))

    @classmethod
    def lower(cls, p: ParameterParams, x: Shape, y: Shape):
        from ..nn_transformer import FreeParameter

        return FreeParameter(y, p.init, p.std)

    @classmethod
    def tensors(cls, p: ParameterParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        return {"weight": ((1, *p.shape), FLOAT)}

    @classmethod
    def initial(cls, p: ParameterParams, x: Shape, y: Shape, scheme: str, rng):
        return {"weight": free_initial((1, *p.shape), p, rng)}

    @classmethod
    def emit(cls, p: ParameterParams, x: TensorType, y: TensorType, g) -> str:
        return broadcast_over_batch(g, g.param("weight"), 1 + len(p.shape))


class ClassToken(LayerKind):
    name = "class_token"
    Params = FreeTensorParams
    doc = ("Prepends a learned token (1, D) to a sequence of tokens, ViT's [class] token (Dosovitskiy et al. "
           "2021, eq. 1); its tensor has torchvision's shape (1, 1, D), zeros by default as there.")
    input_rank = (2,)
    input_desc = "(T, D)"
    input_layouts = ("TF",)
    shape_rule = "(T, D) -> (T+1, D)"
    flops_rule = "none (a concatenation)"
    example = {"init": "normal"}

    @classmethod
    def infer(cls, p: FreeTensorParams, x: Shape) -> Shape:
        return (x[0] + 1, x[1])

    @classmethod
    def cost(cls, p: FreeTensorParams, x: Shape, y: Shape) -> Cost:
        return Cost(params=x[1])

    @classmethod
    def lower(cls, p: FreeTensorParams, x: Shape, y: Shape):
        from ..nn_transformer import ClassToken as TorchClassToken

        return TorchClassToken(x[1], p.init, p.std)

    @classmethod
    def tensors(cls, p: FreeTensorParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        return {"token": ((1, 1, x[1]), FLOAT)}

    @classmethod
    def initial(cls, p: FreeTensorParams, x: Shape, y: Shape, scheme: str, rng):
        return {"token": free_initial((1, 1, x[1]), p, rng)}

    @classmethod
    def emit(cls, p: FreeTensorParams, x: TensorType, y: TensorType, g) -> str:
        # (1, 1, D) expanded to (N, 1, D), in front of the tokens (N, T, D) on the token axis
        return g.op("Concat", [broadcast_over_batch(g, g.param("token"), 3), g.x], axis=1)


class LayerScaleParams(LayerParams):
    value: float = Field(1e-6, description="the initial scale of every channel (ConvNeXt: 1e-6)")


class LayerScale(LayerKind):
    name = "layer_scale"
    Params = LayerScaleParams
    doc = ("Multiplies every channel by its own learned scale (Touvron et al. 2021 'CaiT' §3; ConvNeXt, Liu et al. "
           "2022), the channels or features the input's layout names: (C, 1, 1) for images (C, H, W) as "
           "torchvision's ConvNeXt, (F) for a sequence (T, F) or a vector.")
    flops_rule = "1 multiply per element"
    example = {"value": 0.5}

    @classmethod
    def output_types(cls, p: LayerScaleParams, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        cls.scale_shape(xs[0])
        return (xs[0],)

    @classmethod
    def cost_n(cls, p: LayerScaleParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        return Cost(params=cls.scale_shape(xs[0])[0], flops=numel(xs[0].shape))

    @classmethod
    def lower_n(cls, p: LayerScaleParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from ..nn_transformer import LayerScale as TorchLayerScale

        return TorchLayerScale(cls.scale_shape(xs[0]), p.value)

    @staticmethod
    def scale_shape(x: TensorType) -> Shape:
        """One scale per channel or feature of the layout, shaped to broadcast along that axis:
        torchvision ConvNeXt's (C, 1, 1) for images (C, H, W), (F,) for a sequence (T, F) or a vector."""
        axis = x.channel_axis_or_error("layer_scale")
        return (x.shape[axis],) + (1,) * (len(x.shape) - 1 - axis)

    @classmethod
    def tensors_n(cls, p: LayerScaleParams, xs: tuple[TensorType, ...],
                  ys: tuple[TensorType, ...]) -> dict[str, tuple[Shape, str]]:
        return {"scale": (cls.scale_shape(xs[0]), FLOAT)}

    @classmethod
    def initial_n(cls, p: LayerScaleParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], scheme: str, rng):
        import numpy as np

        return {"scale": np.full(cls.scale_shape(xs[0]), p.value, np.float32)}

    @classmethod
    def emit(cls, p: LayerScaleParams, x: TensorType, y: TensorType, g) -> str:
        return g.op("Mul", [g.x, g.param("scale")])  # broadcast along the channel or feature axis
