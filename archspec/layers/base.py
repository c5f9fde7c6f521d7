"""The layer registry: one `LayerKind` subclass per kind holds its schema, shape rule, cost
rule and lowering, and registers itself by being defined (as ONNX pairs an operator schema
with its shape inference). Engines look kinds up here and never switch on a kind's name.

Conventions, stated once and used everywhere:
- Shapes are per sample, batch axis excluded: images (C, H, W), sequences (T, F), tokens (T,).
- params: trainable parameters, as `sum(p.numel() for p in module.parameters())` counts them
  (BatchNorm running statistics are buffers, not parameters).
- macs: multiply-accumulates of conv, linear and recurrent gate matmuls, bias excluded: the
  convention behind torchvision's published GFLOPS.
- flops: 2*macs + bias adds + one flop per element for activations, adds and normalisation
  steps, one per window element for pooling (documented per kind in `flops`). Per sample.
- A tensor type carries its layout: "CHW" (image), "TF" (sequence: time, features), "T" (token
  ids), "F" (features). A rule that keeps the rank keeps the layout; one that changes the rank
  gets the default layout of the new rank unless it says otherwise (`default_layout`). permute and
  transpose move the letters with their axes (HWC, FT); the axis a kind normalises, scales or joins
  is read from the letters (`channel_axis`), never from the rank, and a kind that needs one
  layout says so (`input_layouts`).

The operator contract is N-ary: a node reads a tuple of input types and produces a tuple of
output types. The graph engines call only the N-ary methods:

    output_types(p, xs) -> ys      shape rule (raise ShapeError)
    cost_n(p, xs, ys) -> Cost      cost rule
    lower_n(p, xs, ys) -> Module   lowering; the module's forward takes the inputs positionally

`arity` says how many inputs a kind reads (1; None = two or more). A kind whose parameters name
an earlier value (`reference_fields`: upsample's `to`) reads it as a further input, after those.
A kind with several outputs names them in its parameters (`output_names`: split's `as`), so a later
item reads each piece by name, never by position. A unary kind (almost every
kind) writes only the unary methods, `infer(p, shape)` or `output_type(p, x)`, `cost(p, x, y)` on
shapes and `lower(p, x, y)`; the N-ary defaults delegate to them. `concat` and `add` (merge.py)
are the N-ary kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    import numpy
    import torch

    from ..exporter.emit import Emitter

Shape = tuple[int, ...]
FLOAT, INT = "float32", "int64"


class ShapeError(Exception):
    """Raised by a shape rule; `field` names the parameter at fault, if one is; `axis`, for inputs
    that disagree, the per-sample axis they must agree on (where the checker looks for the layer to fix)."""

    def __init__(self, message: str, field: str | None = None, code: str = "AS201", axis: int | None = None):
        super().__init__(message)
        self.field, self.code, self.axis = field, code, axis


@dataclass(frozen=True, slots=True)
class TensorType:
    shape: Shape
    dtype: str = FLOAT
    layout: str = ""  # "CHW", "TF", "T", "F"; "" = the default of its rank (`default_layout`)

    def __str__(self) -> str:
        return "x".join(map(str, self.shape)) if self.shape else "scalar"

    @property
    def axes(self) -> str:
        """The layout, one letter per per-sample axis."""
        return self.layout or default_layout(len(self.shape), self.dtype)

    @property
    def channel_axis(self) -> int | None:
        """The per-sample axis of channels (C, an image's) or features (F, a sequence's or vector's):
        what concat joins and batch norm normalises; None for a layout with neither (token ids)."""
        axes = self.axes
        return axes.index("C") if "C" in axes else axes.index("F") if "F" in axes else None

    def permuted(self, order: list[int]) -> str:
        """The layout after `x.permute(order)` (per-sample axes): the letters move with their axes, so
        (C, H, W) permuted by [1, 2, 0] is HWC, which kinds that need CHW refuse (`input_layouts`)."""
        axes = self.axes
        return "".join(axes[d] for d in order) if len(axes) == len(self.shape) else ""

    def channel_axis_or_error(self, kind: str) -> int:
        """`channel_axis`, or a ShapeError naming the kind and the axis it needs."""
        axis = self.channel_axis
        if axis is None:
            raise ShapeError(f"{kind} works on channels (C) or features (F); a {self.axes} input has neither")
        return axis


AXIS_NAMES = {"C": "channels", "H": "height", "W": "width", "T": "time", "F": "features"}  # layout letter -> name


def default_layout(rank: int, dtype: str = FLOAT) -> str:
    """An input's layout when the spec does not say: (C, H, W), (T, F), token ids (T,), features (F,)."""
    if rank == 1:
        return "T" if dtype == INT else "F"
    return {2: "TF", 3: "CHW"}.get(rank, "C" + "".join(f"D{i}" for i in range(rank - 1)))


@dataclass(frozen=True, slots=True)
class Cost:
    params: int = 0
    macs: int = 0
    flops: int = 0
    biases: int = 0  # the part of `params` that is conv/linear/recurrent bias (papers often count weights only)


class LayerParams(BaseModel):
    """Base of every kind's parameter schema: strict, frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


class NoParams(LayerParams):
    """For kinds without parameters, written as a bare `- relu`."""


def numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# --- Parameter types, normalised once at the boundary -------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Every integer of a layer is at most this: ONNX attributes are int64 and some kernels index with
# int32, and no real kernel, stride or width comes near it.
MAX_INT = 2**31 - 1


def _positive_pair(name: str, minimum: int) -> Any:
    def check(v: Any) -> tuple[int, int]:
        if _is_int(v):
            v = (v, v)
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) for x in v):
            if min(v) < minimum:
                raise PydanticCustomError("out_of_range", "{name} must be >= {minimum}, got {got}",
                                          {"name": name, "minimum": minimum, "got": list(v) if len(set(v)) > 1 else v[0]})
            if max(v) > MAX_INT:
                raise PydanticCustomError("out_of_range", f"{{name}} must be at most {MAX_INT:,}, got {{got}}",
                                          {"name": name, "got": max(v)})
            return (v[0], v[1])
        raise ValueError(f"expected {name} as an integer or [height, width], got {v!r}")

    schema = {"anyOf": [{"type": "integer", "minimum": minimum},
                        {"type": "array", "items": {"type": "integer", "minimum": minimum},
                         "minItems": 2, "maxItems": 2}, {"type": "string"}]}
    return Annotated[tuple[int, int], PlainValidator(check), WithJsonSchema(schema)]


Size2 = _positive_pair("a size", 1)  # kernel, stride, dilation: int or [h, w], each >= 1
Pad2 = _positive_pair("padding", 0)


def _padding(v: Any) -> tuple[int, int, int, int] | str:
    """int | [h, w] | [top, bottom, left, right] | 'same' | 'valid' -> (t, b, l, r) or 'same'."""
    if v == "valid":
        return (0, 0, 0, 0)
    if v == "same":
        return "same"
    if _is_int(v):
        v = [v, v]
    if isinstance(v, (list, tuple)) and all(_is_int(x) for x in v) and len(v) in (2, 4):
        if min(v) < 0:
            raise PydanticCustomError("out_of_range", "padding must be >= 0, got {got}", {"got": list(v)})
        if max(v) > MAX_INT:
            raise PydanticCustomError("out_of_range", f"padding must be at most {MAX_INT:,}, got {{got}}",
                                      {"got": max(v)})
        return (v[0], v[0], v[1], v[1]) if len(v) == 2 else tuple(v)  # type: ignore[return-value]
    raise ValueError(f"expected padding as an integer, [h, w], [top, bottom, left, right], "
                     f"'same' or 'valid', got {v!r}")


Padding = Annotated[
    Any, PlainValidator(_padding),
    WithJsonSchema({"anyOf": [
        {"type": "integer", "minimum": 0}, {"enum": ["same", "valid"]}, {"type": "string"},
        {"type": "array", "items": {"type": ["integer", "string"]}, "minItems": 2, "maxItems": 4}]}),
]
PositiveInt = Annotated[int, Field(gt=0, le=MAX_INT)]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


# --- Registry --------------------------------------------------------------------------------

REGISTRY: dict[str, type[LayerKind]] = {}


class LayerKind:
    """One layer kind. Subclasses set `name`, `Params`, `doc` and the three rules; defining the
    subclass registers it."""

    name: ClassVar[str]
    Params: ClassVar[type[LayerParams]]
    doc: ClassVar[str] = ""
    input_rank: ClassVar[tuple[int, ...] | None] = None  # accepted per-sample ranks; None = any
    input_desc: ClassVar[str] = ""  # how the docs and errors name the expected input, e.g. "(C, H, W)"
    # accepted layouts (TensorType.axes); None = any. A kind that reads axis 0 as channels needs CHW, so
    # a permuted (H, W, C) is refused rather than read along the wrong axis
    input_layouts: ClassVar[tuple[str, ...] | None] = None
    input_dtype: ClassVar[str] = FLOAT
    flops_rule: ClassVar[str] = ""  # one line for the docs, with its reference
    shape_rule: ClassVar[str] = "output shape = input shape"
    macs_rule: ClassVar[str] = "0 (no multiply-accumulates)"
    example: ClassVar[dict[str, Any] | None] = None  # a valid parameter set, for generated tests
    arity: ClassVar[int | None] = 1  # inputs read; None = two or more (concat, add)
    zero_init: ClassVar[bool] = False  # starts at zero as a residual body's last layer (zero_init_residual)
    min_opset: ClassVar[int] = 13  # the oldest ONNX opset `emit` is valid in (13: Squeeze/Softmax as used)
    # normalises each sample by statistics of its own values: float32 rounding of the mean is amplified
    # by 1/sqrt(var + eps), so export verification also compares against float64 (exporter.verify)
    sample_statistics: ClassVar[bool] = False
    reference_fields: ClassVar[tuple[str, ...]] = ()  # parameters naming an earlier value, read as further inputs

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in REGISTRY:
                raise RuntimeError(f"layer kind {cls.name!r} registered twice")
            REGISTRY[cls.name] = cls

    # -- the N-ary contract (what the engines call); the defaults delegate to the unary rules --
    @classmethod
    def output_types(cls, p: Any, xs: tuple[TensorType, ...]) -> tuple[TensorType, ...]:
        x, y = xs[0], cls.output_type(p, xs[0])
        if not y.layout:  # the same rank keeps the layout; another rank takes that rank's default
            same = len(y.shape) == len(x.shape) and y.dtype == x.dtype and x.layout
            y = TensorType(y.shape, y.dtype, x.layout if same else default_layout(len(y.shape), y.dtype))
        return (y,)

    @classmethod
    def cost_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> Cost:
        return cls.cost(p, xs[0].shape, ys[0].shape)

    @classmethod
    def lower_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> torch.nn.Module:
        return cls.lower(p, xs[0].shape, ys[0].shape)

    @classmethod
    def emit_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], g: Emitter) -> tuple[str, ...]:
        """ONNX emission: nodes for the input values `g.xs` (batch axis first); returns the output values."""
        return (cls.emit(p, xs[0], ys[0], g),)

    @classmethod
    def tensors_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...]) -> dict[str, tuple[Shape, str]]:
        return cls.tensors(p, xs[0].shape, ys[0].shape)

    @classmethod
    def initial_n(cls, p: Any, xs: tuple[TensorType, ...], ys: tuple[TensorType, ...], scheme: str,
                  rng: Any) -> dict[str, Any]:
        return cls.initial(p, xs[0].shape, ys[0].shape, scheme, rng)

    @classmethod
    def output_names(cls, p: Any) -> tuple[str, ...]:
        """The names of a kind's several outputs, as its parameters give them (split's `as`); () for
        the one output, which the item's `name:` names."""
        return ()

    # -- the unary rules ---------------------------------------------------------------------
    @classmethod
    def output_type(cls, p: Any, x: TensorType) -> TensorType:
        return TensorType(cls.infer(p, x.shape), FLOAT)

    @classmethod
    def infer(cls, p: Any, shape: Shape) -> Shape:
        """The output shape; raise ShapeError when the input cannot be consumed."""
        return shape

    @classmethod
    def cost(cls, p: Any, x: Shape, y: Shape) -> Cost:
        return Cost(flops=numel(y))

    @classmethod
    def lower(cls, p: Any, x: Shape, y: Shape) -> torch.nn.Module:
        raise NotImplementedError(f"{cls.name} has no PyTorch lowering")

    @classmethod
    def input_problem(cls, x: TensorType) -> tuple[str, str] | None:
        """Why this kind cannot read `x` at all, by its declared rank, dtype and layouts, as (message,
        hint), or None. Analyze reports it as AS203; resolve asks it of the layers of a block whose `in`
        reads fail, where it is the mistake the failed reads follow from."""
        if cls.input_rank is not None and len(x.shape) not in cls.input_rank:
            return (f"{cls.name} expects a {cls.input_desc} input, got {x} (rank {len(x.shape)})", cls.input_hint(x))
        if x.dtype != cls.input_dtype:
            return (f"{cls.name} expects {cls.input_dtype} input, got {x.dtype}",
                    "token ids go through an `embedding` first" if x.dtype == INT else "feed it integer token ids")
        if cls.input_layouts is not None and x.axes not in cls.input_layouts:
            layouts = " or ".join(cls.input_layouts)
            return f"{cls.name} expects a {cls.input_desc} input (layout {layouts}), got {x} in layout {x.axes}", \
                cls.input_hint(x)
        return None

    @classmethod
    def input_hint(cls, x: TensorType) -> str:
        """How to give this kind an input it reads in place of `x`, with the items to paste before it
        where spec items can do it; a kind overrides it where its own idiom says more."""
        if x.dtype == INT and cls.input_dtype != INT:
            return "token ids go through an `embedding` first"
        for want in cls.input_layouts or ():
            items = " and ".join(f"`- {item}`" for item in layout_items(x.axes, want))
            if items and (x.axes, want) == ("CHW", "TF"):
                return (f"an image (C, H, W) becomes a sequence of H*W tokens of C features, as ViT's patch "
                        f"tokens: insert {items} before it")
            if items:
                return f"permute its axes back to {want} first: insert {items} before it"
        if cls.input_layouts and len(x.shape) == len(cls.input_layouts[0]):
            return f"permute its axes back to {cls.input_layouts[0]} first"
        if len(x.shape) == 1 and cls.input_rank is not None and 1 not in cls.input_rank:
            return "this layer needs more axes; is it after a `flatten` or global pooling?"
        return ""

    @classmethod
    def fix_hint(cls, first: Shape, other: Shape) -> str:
        """A suggested fix when inputs of these shapes cannot be combined (N-ary kinds)."""
        return ""

    @classmethod
    def tensors(cls, p: Any, x: Shape, y: Shape) -> dict[str, tuple[Shape, str]]:
        """The lowered module's state-dict entries, local name -> (shape, dtype): what a weights file
        must hold for this layer, known without building anything."""
        return {}

    @classmethod
    def initial(cls, p: Any, x: Shape, y: Shape, scheme: str, rng: Any) -> dict[str, Any]:
        """Seeded numpy initial values of `tensors` under the spec's `init.scheme` (as `init` does in
        torch, from the same distributions; "zero" asks a normalisation to start at zero)."""
        return {}

    @classmethod
    def emit(cls, p: Any, x: TensorType, y: TensorType, g: Emitter) -> str:
        """Adds this layer's ONNX nodes for input value `g.x` (batch axis first) and returns the name
        of its output value; tensors come from `g.param(local name)`."""
        raise NotImplementedError(f"{cls.name} has no ONNX emission")

    @classmethod
    def brief(cls, p: Any) -> str:
        """A few words for diagrams, as the lecture's figures label layers ("3x3 conv, 64, /2")."""
        return cls.name

    @classmethod
    def init(cls, module: torch.nn.Module, p: Any, scheme: str) -> bool:
        """Re-initialises `module` for the spec's `init.scheme` ("pytorch" keeps PyTorch's defaults;
        "zero" asks a normalisation to start at zero). Returns whether it did anything."""
        return False


def layout_items(have: str, want: str) -> tuple[str, ...]:
    """Spec items that turn a value of layout `have` into layout `want`, or () where none do: an image
    into a token sequence (flatten makes (C, H*W), transpose (H*W, C): ViT's patch tokens, Dosovitskiy
    et al. 2021 eq. 1), or a permutation of the same axes."""
    if (have, want) == ("CHW", "TF"):
        return ("flatten: {start: 1}", "transpose: {dims: [0, 1]}")
    if have == want or sorted(have) != sorted(want) or len(set(have)) != len(have):
        return ()
    if len(have) == 2:
        return ("transpose: {dims: [0, 1]}",)
    return (f"permute: {{dims: [{', '.join(str(have.index(a)) for a in want)}]}}",)


def init_weight_bias(module: Any, scheme: str) -> bool:
    """Conv/linear initialisation: kaiming (He et al. 2015, fan_out, as torchvision's ResNet/VGG)
    or xavier (Glorot & Bengio 2010); biases start at zero."""
    from torch import nn

    if scheme == "kaiming":
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif scheme == "xavier":
        nn.init.xavier_uniform_(module.weight)
    else:
        return False
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return True


def uniform(rng: Any, shape: Shape, bound: float) -> numpy.ndarray:
    return rng.uniform(-bound, bound, shape).astype("float32")


def weight_bias_initial(weight: Shape, bias: bool, fan_in: int, fan_out: int, scheme: str, rng: Any) -> dict[str, Any]:
    """Conv/linear initial values, the distributions of `init_weight_bias`: PyTorch's default
    kaiming_uniform(a=sqrt 5), i.e. U(+-1/sqrt(fan_in)) for weight and bias (torch.nn.Linear docs);
    kaiming N(0, 2/fan_out) (He et al. 2015); xavier U(+-sqrt(6/(fan_in+fan_out))) (Glorot & Bengio 2010)."""
    import numpy as np

    if scheme == "kaiming":
        w = (rng.standard_normal(weight) * np.sqrt(2.0 / fan_out)).astype(np.float32)
    elif scheme == "xavier":
        w = uniform(rng, weight, float(np.sqrt(6.0 / (fan_in + fan_out))))
    else:
        w = uniform(rng, weight, 1.0 / float(np.sqrt(fan_in)))
    out = {"weight": w}
    if bias:
        out["bias"] = (uniform(rng, weight[:1], 1.0 / float(np.sqrt(fan_in))) if scheme not in ("kaiming", "xavier")
                       else np.zeros(weight[:1], np.float32))
    return out


def lookup(kind: str) -> type[LayerKind] | None:
    return REGISTRY.get(kind)


def out_size(n: int, k: int, s: int, pad_total: int, dilation: int = 1, ceil: bool = False,
             pad_begin: int = 0) -> int:
    """Output length of a sliding window (d2l §7.3: floor((n - k + p + s) / s); PyTorch Conv2d/MaxPool2d docs
    for dilation and ceil_mode, where a last window that starts in the right padding is dropped)."""
    span = dilation * (k - 1) + 1
    top = n + pad_total - span
    if top < 0 and not ceil:
        return 0
    out = (-(-top // s) if ceil else top // s) + 1
    if ceil and (out - 1) * s >= n + pad_begin:
        out -= 1
    return out

