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

from .base import Cost, LayerKind, LayerParams, PositiveInt, Probability, Shape, ShapeError, TensorType, numel


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
    shape_rule = "(T, D) -> (T, D); D divisible by heads"
    macs_rule = ("4*T*D^2 (q, k, v and out projections) + 2*T^2*D (Q K^T and A V over all heads): the two "
                 "attention matmuls are counted, as FlopCounterMode and torchvision's ViT GFLOPS count them")
    flops_rule = ("2*MACs + 4*T*D bias adds + T*D for the 1/sqrt(d) scale + 3*heads*T^2 for the softmax "
                  "(exp, sum, divide)")
    example = {"heads": 5}  # the generated tests feed (T, 5) tokens

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


class ClassToken(LayerKind):
    name = "class_token"
    Params = FreeTensorParams
    doc = ("Prepends a learned token (1, D) to a sequence of tokens, ViT's [class] token (Dosovitskiy et al. "
           "2021, eq. 1); its tensor has torchvision's shape (1, 1, D), zeros by default as there.")
    input_rank = (2,)
    input_desc = "(T, D)"
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


class LayerScaleParams(LayerParams):
    value: float = Field(1e-6, description="the initial scale of every channel (ConvNeXt: 1e-6)")


class LayerScale(LayerKind):
    name = "layer_scale"
    Params = LayerScaleParams
    doc = ("Multiplies every channel by its own learned scale (Touvron et al. 2021 'CaiT' §3; ConvNeXt, Liu et al. "
           "2022): (C, 1, 1) for images (C, H, W) as torchvision's ConvNeXt, (D) on the last axis otherwise.")
    flops_rule = "1 multiply per element"
    example = {"value": 0.5}

    @classmethod
    def cost(cls, p: LayerScaleParams, x: Shape, y: Shape) -> Cost:
        return Cost(params=x[0] if len(x) == 3 else x[-1], flops=numel(x))

    @classmethod
    def lower(cls, p: LayerScaleParams, x: Shape, y: Shape):
        from ..nn_transformer import LayerScale as TorchLayerScale

        return TorchLayerScale((x[0], 1, 1) if len(x) == 3 else (x[-1],), p.value)
