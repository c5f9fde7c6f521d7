"""Dense layers and shape plumbing: linear, flatten, dropout, identity, embedding."""

from __future__ import annotations

from pydantic import Field

from .base import (
    INT,
    Cost,
    LayerKind,
    LayerParams,
    NoParams,
    PositiveInt,
    Probability,
    Shape,
    ShapeError,
    TensorType,
    init_weight_bias,
    numel,
    weight_bias_initial,
)


class LinearParams(LayerParams):
    out: PositiveInt
    bias: bool = True
    in_features: PositiveInt | None = Field(None, alias="in")


class Linear(LayerKind):
    name = "linear"
    Params = LinearParams
    doc = "Fully connected layer on the last axis: (..., F) -> (..., out); per time step on sequences."
    input_desc = "(..., F)"
    flops_rule = "2*MACs + one add per output element for the bias"
    shape_rule = "(..., F) -> (..., out)"
    macs_rule = "positions * F * out (each time step of a sequence pays the full matmul)"
    example = {"out": 5}

    @classmethod
    def infer(cls, p: LinearParams, x: Shape) -> Shape:
        if not x:
            raise ShapeError("linear needs at least one axis of features")
        if p.in_features is not None and p.in_features != x[-1]:
            raise ShapeError(f"declared in={p.in_features} but the input has {x[-1]} features"
                             + (" (add a flatten before it?)" if len(x) > 1 else ""), "in")
        return x[:-1] + (p.out,)

    @classmethod
    def brief(cls, p: LinearParams) -> str:
        return f"fc {p.out}"

    @classmethod
    def cost(cls, p: LinearParams, x: Shape, y: Shape) -> Cost:
        macs = numel(x[:-1]) * x[-1] * p.out  # every position of a sequence pays the full matmul
        bias = p.out if p.bias else 0
        return Cost(params=x[-1] * p.out + bias, macs=macs, flops=2 * macs + (numel(y) if p.bias else 0), biases=bias)

    @classmethod
    def lower(cls, p: LinearParams, x: Shape, y: Shape):
        from torch import nn

        return nn.Linear(x[-1], p.out, bias=p.bias)

    @classmethod
    def init(cls, module, p: LinearParams, scheme: str) -> bool:
        return init_weight_bias(module, scheme)

    @classmethod
    def tensors(cls, p: LinearParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        return {"weight": ((p.out, x[-1]), "float32"), **({"bias": ((p.out,), "float32")} if p.bias else {})}

    @classmethod
    def initial(cls, p: LinearParams, x: Shape, y: Shape, scheme: str, rng):
        return weight_bias_initial((p.out, x[-1]), p.bias, x[-1], p.out, scheme, rng)

    @classmethod
    def emit(cls, p: LinearParams, x: TensorType, y: TensorType, g) -> str:
        if len(x.shape) == 1:  # (N, F): one Gemm, y = x W^T + b
            return g.op("Gemm", [g.x, g.param("weight")] + ([g.param("bias")] if p.bias else []), transB=1)
        # (N, ..., F): MatMul broadcasts over the leading axes; W^T is stored transposed once
        y_ = g.op("MatMul", [g.x, g.const("weight_t", g.array("weight").T.copy())])
        return g.op("Add", [y_, g.param("bias")]) if p.bias else y_


class FlattenParams(LayerParams):
    start: int = Field(0, description="first per-sample axis merged")
    end: int = Field(-1, description="last per-sample axis merged (inclusive)")


class Flatten(LayerKind):
    name = "flatten"
    Params = FlattenParams
    doc = ("Merges the per-sample axes start..end into one: by default all of them, (C, H, W) -> (C*H*W); "
           "`{start: 1}` turns (C, H, W) into (C, H*W).")
    flops_rule = "none (a view)"
    shape_rule = "(d1, d2, ...) -> (d1*d2*...) over axes start..end"
    example = {}

    @classmethod
    def axes(cls, p: FlattenParams, x: Shape) -> tuple[int, int]:
        rank = max(len(x), 1)
        for field, d in (("start", p.start), ("end", p.end)):
            if not -rank <= d < rank:
                raise ShapeError(f"{field}={d} is out of range for a rank-{len(x)} input", field)
        start, end = p.start % rank, p.end % rank
        if start > end:
            raise ShapeError(f"start={p.start} comes after end={p.end}", "start")
        return start, end

    @classmethod
    def infer(cls, p: FlattenParams, x: Shape) -> Shape:
        start, end = cls.axes(p, x)
        return x[:start] + (numel(x[start:end + 1]),) + x[end + 1:]

    @classmethod
    def output_type(cls, p: FlattenParams, x: TensorType) -> TensorType:
        """An image's positions flattened, (C, H, W) -> (C, H*W), are a sequence whose features are the
        channels: layout FT (ViT's patches, transposed to TF next); anything else takes its rank's default."""
        shape = cls.infer(p, x.shape)
        positions = x.axes == "CHW" and cls.axes(p, x.shape) == (1, 2)
        return TensorType(shape, x.dtype, "FT" if positions else "")

    @classmethod
    def cost(cls, p: FlattenParams, x: Shape, y: Shape) -> Cost:
        return Cost()

    @classmethod
    def lower(cls, p: FlattenParams, x: Shape, y: Shape):
        from torch import nn

        start, end = cls.axes(p, x)
        return nn.Flatten(start + 1, end + 1)

    @classmethod
    def emit(cls, p: FlattenParams, x: TensorType, y: TensorType, g) -> str:
        import numpy as np

        start, end = cls.axes(p, x.shape)
        if start == 0 and end == len(x.shape) - 1:
            return g.op("Flatten", [g.x], axis=1)
        # the batch and the axes before `start` copied (0), the merged one inferred (-1), so each stays dynamic
        head = g.const(f"shape{start}", np.array([0] * (start + 1) + [-1], np.int64))
        if end == len(x.shape) - 1:
            return g.op("Reshape", [g.x, head])
        # the axes after `end` read at run time: ONNX's 0 copies the axis at the same index, not a shifted one
        tail = g.op("Slice", [g.op("Shape", [g.x]), g.const(f"from{end + 2}", np.array([end + 2], np.int64)),
                              g.const("to_end", np.array([len(x.shape) + 1], np.int64))])
        return g.op("Reshape", [g.x, g.op("Concat", [head, tail], axis=0)])


class DropoutParams(LayerParams):
    p: Probability = 0.5


class Dropout(LayerKind):
    name = "dropout"
    Params = DropoutParams
    doc = "Zeroes elements with probability `p` in training; the identity in inference."
    flops_rule = "none at inference"
    example = {"p": 0.3}

    @classmethod
    def cost(cls, p: DropoutParams, x: Shape, y: Shape) -> Cost:
        return Cost()

    @classmethod
    def lower(cls, p: DropoutParams, x: Shape, y: Shape):
        from torch import nn

        return nn.Dropout(p.p)

    @classmethod
    def emit(cls, p: DropoutParams, x: TensorType, y: TensorType, g) -> str:
        return g.x  # the identity at inference


class Identity(LayerKind):
    name = "identity"
    Params = NoParams
    doc = "Passes its input through; the default shortcut of a residual block."
    flops_rule = "none"
    example = {}

    @classmethod
    def cost(cls, p: NoParams, x: Shape, y: Shape) -> Cost:
        return Cost()

    @classmethod
    def lower(cls, p: NoParams, x: Shape, y: Shape):
        from torch import nn

        return nn.Identity()

    @classmethod
    def emit(cls, p: NoParams, x: TensorType, y: TensorType, g) -> str:
        return g.x


class EmbeddingParams(LayerParams):
    vocab: PositiveInt
    dim: PositiveInt


class Embedding(LayerKind):
    name = "embedding"
    Params = EmbeddingParams
    doc = "Looks up a `dim`-vector per token id: (T) int64 -> (T, dim)."
    input_rank = (1,)
    input_desc = "(T) token ids"
    input_dtype = INT
    flops_rule = "none (a table lookup)"
    shape_rule = "(T) int64 -> (T, dim)"
    example = {"vocab": 20, "dim": 6}

    @classmethod
    def output_type(cls, p: EmbeddingParams, x: TensorType) -> TensorType:
        return TensorType(x.shape + (p.dim,))

    @classmethod
    def cost(cls, p: EmbeddingParams, x: Shape, y: Shape) -> Cost:
        return Cost(params=p.vocab * p.dim)

    @classmethod
    def lower(cls, p: EmbeddingParams, x: Shape, y: Shape):
        from torch import nn

        return nn.Embedding(p.vocab, p.dim)

    @classmethod
    def tensors(cls, p: EmbeddingParams, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        return {"weight": ((p.vocab, p.dim), "float32")}

    @classmethod
    def initial(cls, p: EmbeddingParams, x: Shape, y: Shape, scheme: str, rng):
        return {"weight": rng.standard_normal((p.vocab, p.dim)).astype("float32")}  # N(0, 1), as nn.Embedding

    @classmethod
    def emit(cls, p: EmbeddingParams, x: TensorType, y: TensorType, g) -> str:
        return g.op("Gather", [g.param("weight"), g.x], axis=0)
