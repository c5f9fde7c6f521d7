"""One value in, several out: `split` (given sizes, as torch.split with a list) and `chunk` (equal
parts, as torch.chunk where the parts divide the axis). The pieces are named by the layer's `as:`
list, so later items read each one by name (`from: left`), never by position. The axis is named by
the input's layout (`channels`, `height`, `width`, `time`, `features`); by default the axis `concat`
joins (channels of an image, features of a sequence or vector), so a split undoes a concat."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, WithJsonSchema, model_validator

from ..expr import is_identifier
from .base import AXIS_NAMES, Cost, LayerKind, LayerParams, ShapeError, TensorType
from .merge import concat_axis
from .shape import _int_list

AxisName = Literal["channels", "height", "width", "time", "features"]
LETTER = {name: letter for letter, name in AXIS_NAMES.items()}


def _names(v: Any) -> tuple[str, ...]:
    """The pieces' names: two or more identifiers, each once."""
    if not (isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v)):
        raise ValueError(f"expected a list of names, e.g. [left, right], got {v!r}")
    bad = next((n for n in v if not is_identifier(n)), None)
    if bad is not None:
        raise ValueError(f"a name must be letters, digits and _, got {bad!r}")
    if len(v) < 2:
        raise ValueError(f"expected two or more names (one piece is the input itself), got {list(v)}")
    twice = next((n for i, n in enumerate(v) if n in v[:i]), None)
    if twice is not None:
        raise ValueError(f"'{twice}' names two pieces; each piece needs its own name")
    return tuple(v)


Names = Annotated[tuple[str, ...], PlainValidator(_names),
                  WithJsonSchema({"type": "array", "items": {"type": "string"}, "minItems": 2})]


def split_axis(p: Any, x: TensorType) -> int:
    """The per-sample axis `p.axis` names in x's layout (default: the one concat joins)."""
    if p.axis is None:
        return concat_axis(x)
    axes = x.axes
    if LETTER[p.axis] not in axes:
        has = ", ".join(AXIS_NAMES.get(a, a) for a in axes)
        raise ShapeError(f"the {x} input (layout {axes}) has no {p.axis} axis; its axes: {has}", "axis")
    return axes.index(LETTER[p.axis])


def _pieces(x: TensorType, a: int, sizes: tuple[int, ...]) -> tuple[TensorType, ...]:
    return tuple(TensorType(x.shape[:a] + (n,) + x.shape[a + 1:], x.dtype, x.layout) for n in sizes)


AXIS_DOC = "by the input's layout; default: channels of an image, features of a sequence"


class SplitParams(LayerParams):
    sizes: _int_list("a list of sizes, e.g. [32, 32]") = Field(
        description="each piece's size along `axis`; they sum to its length")
    axis: AxisName | None = Field(None, description=AXIS_DOC)
    names: Names = Field(alias="as", description="the pieces' names, one per size; later items read them with `from:`")

    @model_validator(mode="after")
    def _one_name_per_size(self) -> SplitParams:
        if len(self.sizes) != len(self.names):
            raise ValueError(f"`sizes` has {len(self.sizes)} entries but `as` names {len(self.names)} pieces")
        if min(self.sizes) < 1:
            raise ValueError(f"sizes must be positive, got {list(self.sizes)}")
        return self


class _Pieces(LayerKind):
    """Data movement into named pieces: no parameters, no arithmetic (torch.split returns views)."""

    flops_rule = "none (data movement)"

    @classmethod
    def output_names(cls, p: Any) -> tuple[str, ...]:
        return p.names

    @classmethod
    def cost_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        return Cost()


class Split(_Pieces):
    name = "split"
    Params = SplitParams
    doc = ("Cuts one axis into pieces of the given sizes, each named by `as` (torch.split with a list; "
           "ShuffleNetV2's channel split). Later items read a piece by name: `from: left`.")
    input_desc = "any tensor"
    shape_rule = "piece i: the input with axis `axis` of length sizes[i]; the sizes sum to the axis"
    example = {"sizes": [1, 8], "axis": "width", "as": ["edge", "rest"]}

    @classmethod
    def output_types(cls, p: SplitParams, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        x = xs[0]
        a = split_axis(p, x)
        if sum(p.sizes) != x.shape[a]:
            raise ShapeError(f"sizes {list(p.sizes)} sum to {sum(p.sizes)}, but the "
                             f"{AXIS_NAMES.get(x.axes[a], 'split')} axis of the {x} input is {x.shape[a]}", "sizes")
        return _pieces(x, a, p.sizes)

    @classmethod
    def lower_n(cls, p: SplitParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from ..nn import Split as TorchSplit

        return TorchSplit(split_axis(p, xs[0]) + 1, list(p.sizes))  # + the batch axis

    @classmethod
    def emit_n(cls, p: SplitParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], g: Any) -> tuple[str, ...]:
        import numpy as np

        # Split with a `split` input (opset >= 13): one output per piece, named after it
        return g.op("Split", [g.x, g.const("sizes", np.array(p.sizes, np.int64))], outputs=p.names,
                    axis=split_axis(p, xs[0]) + 1)

    @classmethod
    def brief(cls, p: SplitParams) -> str:
        return "split " + " + ".join(map(str, p.sizes))


class ChunkParams(LayerParams):
    axis: AxisName | None = Field(None, description=AXIS_DOC)
    names: Names = Field(alias="as", description="the pieces' names; their number is the number of equal parts")


class Chunk(_Pieces):
    name = "chunk"
    Params = ChunkParams
    doc = ("Cuts one axis into as many equal pieces as `as` names (torch.chunk). An axis the pieces do "
           "not divide is refused rather than cut unevenly as torch.chunk would (its last piece smaller, "
           "or fewer pieces): use `split` with explicit sizes.")
    input_desc = "any tensor"
    shape_rule = "each piece: the input with axis `axis` divided by the number of pieces"
    example = {"axis": "height", "as": ["top", "middle", "bottom"]}

    @classmethod
    def output_types(cls, p: ChunkParams, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        x = xs[0]
        a, n = split_axis(p, x), len(p.names)
        if x.shape[a] % n != 0:  # a comparison, so a symbolic axis records it (bool() would not)
            raise ShapeError(f"{n} equal pieces do not divide the {AXIS_NAMES.get(x.axes[a], 'split')} axis of the "
                             f"{x} input ({x.shape[a]}); use `split` with explicit sizes", "as")
        return _pieces(x, a, (x.shape[a] // n,) * n)

    @classmethod
    def lower_n(cls, p: ChunkParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]):
        from ..nn import Chunk as TorchChunk

        return TorchChunk(split_axis(p, xs[0]) + 1, len(p.names))

    @classmethod
    def emit_n(cls, p: ChunkParams, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], g: Any) -> tuple[str, ...]:
        import numpy as np

        a, n = split_axis(p, xs[0]) + 1, len(p.names)
        if isinstance(g.dims[0][a], int):
            sizes = g.const("sizes", np.full(n, g.dims[0][a] // n, np.int64))
        else:  # a dynamic axis: n copies of its length // n, computed from the input's shape
            length = g.op("Gather", [g.op("Shape", [g.x]), g.const("axis", np.array([a], np.int64))])
            part = g.op("Div", [length, g.const("parts", np.array([n], np.int64))])
            sizes = g.op("Expand", [part, g.const("count", np.array([n], np.int64))])
        return g.op("Split", [g.x, sizes], outputs=p.names, axis=a)

    @classmethod
    def brief(cls, p: ChunkParams) -> str:
        return f"chunk x{len(p.names)}"
