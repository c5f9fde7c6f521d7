"""Stage 2, validate: the top-level spec format (v1) as frozen pydantic models, and the
translation of pydantic's errors into located diagnostics with "did you mean" hints.

Network items are validated by the resolver, after block arguments and expressions are
substituted, against the schema that their layer kind registered (`layers.REGISTRY`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from .errors import Collector, Loc, closest, did_you_mean
from .layers import REGISTRY
from .layers.base import MAX_INT
from .load import Document, Path, format_path

FORMAT_VERSION = 1
IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
RESERVED = frozenset({"repeat", "concat", "add", "residual", "group", "name", "body", "index"})


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


@dataclass(frozen=True, slots=True)
class Dim:
    """One per-sample input axis: fixed (`name` None), or symbolic with a nominal size for costs."""

    size: int
    name: str | None = None


_DIM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+)$")


def _dim(v: Any) -> Dim:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ValueError(f"a dimension must be >= 1, got {v}")
        if v > MAX_INT:
            raise ValueError(f"a dimension must be at most {MAX_INT:,}, got {v}")
        return Dim(v)
    if isinstance(v, str) and (m := _DIM.match(v.replace(" ", ""))) and 1 <= int(m.group(2)) <= 10**9:
        return Dim(int(m.group(2)), m.group(1))
    raise ValueError(f"expected a dimension as a positive integer or a symbolic 'name=nominal' "
                     f"such as 'time=50', got {v!r}")


DimDecl = Annotated[Dim, PlainValidator(_dim), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^[A-Za-z_]\w*=[0-9]+$"}]})]


class InputDecl(Frozen):
    shape: Annotated[tuple[DimDecl, ...], Field(min_length=1, max_length=8, strict=False)]
    dtype: Literal["float32", "int64"] = "float32"
    layout: Literal["CHW", "TF", "T", "F"] | None = Field(None, description=(
        "image (C, H, W), sequence (time, features), tokens (time), features; default from rank and dtype"))


def _input(v: Any) -> Any:
    return {"shape": v} if isinstance(v, list) else v


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_AMOUNT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)$")


def parse_amount(v: Any) -> int:
    """26M -> 26_000_000 (decimal units, as torchvision reports GFLOPS)."""
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    if isinstance(v, str) and (m := _AMOUNT.match(v.strip())):
        whole, _, frac = m.group(1).partition(".")
        unit = _UNITS[m.group(2)]
        return int(whole) * unit + (int(frac) * unit // 10 ** len(frac) if frac else 0)
    raise ValueError(f"expected a count such as 26000000, '26M' or '4.2G', got {v!r}")


Amount = Annotated[int, PlainValidator(parse_amount), WithJsonSchema(
    {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^[0-9.]+\s*[KMGT]?$"}]})]


class Budget(Frozen):
    params: Amount | None = None
    macs: Amount | None = None
    flops: Amount | None = None
    activation_bytes: Amount | None = None


Scalar = int | float | bool | str
ParamType = Literal["int", "float", "bool", "str"]


class ParamDecl(Frozen):
    type: ParamType
    default: Scalar | None = None


def _param_decl(v: Any) -> Any:
    return {"type": v} if isinstance(v, str) else v


class BlockDef(Frozen):
    doc: str = ""
    params: dict[Annotated[str, Field(pattern=IDENT)], Annotated[ParamDecl, BeforeValidator(_param_decl)]] = {}
    body: Annotated[list[Any], Field(min_length=1)]


class InitDecl(Frozen):
    scheme: Literal["pytorch", "kaiming", "xavier"] = "pytorch"
    zero_init_residual: bool = False


Percent = Annotated[float, Field(ge=0, le=100, strict=False)]


class Meta(Frozen):
    """What a spec records beside the architecture: a published accuracy, which `archspec plot`
    draws and which must name its source, and the class names that `archspec run` labels with."""

    top1: Percent | None = None
    top5: Percent | None = None
    dataset: str = ""
    source: str = ""
    labels: list[str] | Annotated[str, Field(description="a file with one class name per line, "
                                             "relative to the spec")] | None = None

    @model_validator(mode="after")
    def _cited(self) -> Meta:
        if (self.top1 is not None or self.top5 is not None) and not self.source.strip():
            raise ValueError("an accuracy needs its source: add `source:` (a paper, or the weights' page)")
        return self


class Spec(Frozen):
    archspec: int
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128)]
    description: str = ""
    input: Annotated[dict[Annotated[str, Field(pattern=IDENT)], Annotated[InputDecl, BeforeValidator(_input)]],
                     Field(min_length=1, max_length=1, description="the one input: {name: shape}")] | None = None
    inputs: Annotated[dict[Annotated[str, Field(pattern=IDENT)], Annotated[InputDecl, BeforeValidator(_input)]],
                      Field(min_length=1, max_length=16,
                            description="several named inputs, in order; read with `from: name`")] | None = None
    vars: dict[Annotated[str, Field(pattern=IDENT)], Scalar] = {}
    blocks: dict[Annotated[str, Field(pattern=IDENT)], BlockDef] = {}
    network: Annotated[list[Any], Field(min_length=1)]
    output: Annotated[str, Field(pattern=IDENT, max_length=128,
                                 description="the model output's name in exported ONNX models")] = "output"
    outputs: Annotated[dict[Annotated[str, Field(pattern=IDENT, max_length=128)],
                            Annotated[str, Field(pattern=IDENT)]],
                       Field(min_length=1, max_length=64,
                             description="several named outputs: {output name: name of an item}")] | None = None
    budget: Budget | None = None
    init: InitDecl = InitDecl()
    meta: Meta | None = None

    @property
    def input_key(self) -> str:
        return "inputs" if self.inputs is not None else "input"


# --- pydantic errors -> located diagnostics ---------------------------------------------------

_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "float_type": "a number", "bool_type": "true or false",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "int_from_float": "an integer",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)
    shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
    return f"{shown} ({kind})"


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X (the first pydantic model of a union, if any)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if len(options) == 1:  # X | None
            return _unwrap(options[0])
        models = [a for a in map(_unwrap, options) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else annotation
    return annotation


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """Valid key names of the (sub)model that `loc` points into, for "did you mean"."""
    current = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part) or next(
                (f for f in current.model_fields.values() if f.alias == part), None)
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) in (dict, list, tuple):
            current = get_args(current)[-1]  # a key or index: step into the values
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _data_loc(err: Any) -> tuple:
    """pydantic appends validator names to union/function paths; keep the data path only."""
    return tuple(p for p in err["loc"] if isinstance(p, int) or not str(p).startswith(("function-", "json-")))


def report_validation(exc: ValidationError, doc: Document, base: Path, model: type[BaseModel] | None,
                      out: Collector, related: tuple[tuple[str, Loc], ...] = ()) -> None:
    """Adds one diagnostic per pydantic error, located at the offending YAML node. A missing key
    that an unknown near-miss key explains (`kernal` for `kernel`) is one mistake: only the
    unknown key is reported, with its "did you mean"."""
    errors = exc.errors(include_url=False)
    explained = set()  # (parent data path, missing key) that a misspelt key accounts for
    for err in errors:
        data_loc = _data_loc(err)
        if err["type"] == "extra_forbidden" and data_loc:
            explained.add((data_loc[:-1], closest(str(data_loc[-1]), _fields_at(model, data_loc[:-1]))))
    for err in errors:
        data_loc = _data_loc(err)
        if err["type"] == "missing" and data_loc and (data_loc[:-1], data_loc[-1]) in explained:
            continue
        path = base + data_loc
        if path[:1] == ("input",) and path[2:3] == ("shape",) and path[:3] not in doc.value_locs:
            path = path[:2] + path[3:]  # the short form `image: [3, 224, 224]` has no `shape` key
        typ, value = err["type"], err.get("input")
        hint = ""
        if typ == "extra_forbidden":
            key = data_loc[-1] if data_loc else "?"
            code, message = "AS101", f"unknown key '{key}'"
            choices = _fields_at(model, data_loc[:-1])
            hint = did_you_mean(str(key), choices) or (f"valid keys: {', '.join(choices)}" if choices else "")
            where = doc.key_loc(path)
        elif typ == "missing":
            code, message = "AS102", f"missing required key '{data_loc[-1]}'"
            where = doc.loc(path[:-1])
        elif typ in _TYPE_NAMES:
            code, message = "AS103", f"expected {_TYPE_NAMES[typ]}, got {_describe(value)}"
            if isinstance(value, str) and value.lower() in ("yes", "no", "on", "off"):
                hint = "write true or false"
            where = doc.loc(path)
        elif typ == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            code, message = "AS107", f"expected one of {expected}, got {_describe(value)}"
            options = re.findall(r"'([^']*)'", str(expected))
            hint = did_you_mean(str(value), options)
            where = doc.loc(path)
        elif typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            code, message = "AS104", f"{err['msg'].lower().replace('input should be', 'must be')}, got {value!r}"
            where = doc.loc(path)
        elif typ == "out_of_range":
            code, message = "AS104", err["msg"]
            where = doc.loc(path)
        elif typ in ("too_short", "too_long"):
            code, message = "AS107", err["msg"].replace("List", "list").replace("Dictionary", "mapping")
            where = doc.loc(path)
        elif typ == "string_pattern_mismatch":
            code, message = "AS107", f"{_describe(value)} is not a valid name (letters, digits and _)"
            where = doc.key_loc(path) if data_loc and isinstance(value, str) and value == data_loc[-1] else doc.loc(path)
        else:
            msg = err["msg"].removeprefix("Value error, ")
            code, message = "AS107", msg[0].lower() + msg[1:] if msg else "invalid value"
            where = doc.loc(path)
        out.add(code, message, where, format_path(path), hint, related)


def validate_spec(doc: Document) -> Spec | None:
    """Returns the validated top level, or adds diagnostics and returns None."""
    out = Collector()
    data = doc.data
    if data is None:
        out.add("AS018", "the spec is empty", Loc(doc.file, 1, 1), hint="start with `archspec: 1`")
        out.raise_if_any()
    if not isinstance(data, dict):
        out.add("AS103", f"a spec is a mapping of keys, got {_describe(data)}", doc.loc(()))
        out.raise_if_any()
    version = data.get("archspec")
    if version != FORMAT_VERSION:
        where = doc.loc(("archspec",)) if "archspec" in data else Loc(doc.file, 1, 1)
        out.add("AS106", f"unsupported format version {version!r}" if "archspec" in data
                else "missing format version", where, hint=f"start the file with `archspec: {FORMAT_VERSION}`")
        out.raise_if_any()
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        report_validation(exc, doc, (), Spec, out)
        out.raise_if_any()
    if (spec.input is None) == (spec.inputs is None):
        both = spec.input is not None
        out.add("AS107" if both else "AS102",
                "give either `input:` (one input) or `inputs:` (several), not both" if both
                else "missing required key 'input'", doc.loc(("inputs",)) if both else Loc(doc.file, 1, 1),
                "inputs" if both else "", "" if both else "declare it, e.g. `input: {image: [3, 224, 224]}`")
    if "output" in data and spec.outputs is not None:
        out.add("AS107", "give either `output:` (the one output's name) or `outputs:` (several), not both",
                doc.loc(("outputs",)), "outputs")
    for name in spec.blocks:
        if name in RESERVED or name in REGISTRY:
            what = "a layer kind" if name in REGISTRY else "reserved"
            out.add("AS107", f"'{name}' is {what} and cannot name a block", doc.key_loc(("blocks", name)),
                    hint="choose another block name")
    out.raise_if_any()
    return spec
