"""Markdown reference of the spec language and the error codes, generated from the layer registry
and the code table, so the docs cannot go stale (tests compare them with docs/)."""

from __future__ import annotations

from typing import Any

from .errors import CODES
from .layers import REGISTRY

_JSON_TYPES = {"integer": "int", "number": "float", "boolean": "bool", "string": "str", "null": "null"}


def _schema_type(prop: dict) -> str:
    """A compact type from a field's JSON schema: `int or [h, w]`, `'sequence' | 'last'`."""
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop:
        kinds = [k for k in (_schema_type(p) for p in prop["anyOf"]) if k != "null"]
        return " or ".join(dict.fromkeys(k for k in kinds if k != "str" or len(kinds) == 1))  # `to`: str
    if prop.get("type") == "array":
        n = prop.get("maxItems")
        return "[h, w]" if n == 2 else "[t, b, l, r]" if n == 4 else "list"
    return _JSON_TYPES.get(prop.get("type", ""), "value")


def _bounds(prop: dict) -> str:
    marks = {"exclusiveMinimum": ">", "minimum": ">=", "exclusiveMaximum": "<", "maximum": "<="}
    found = [f"{op} {prop[k]}" for k, op in marks.items() if k in prop]
    for sub in prop.get("anyOf", []):
        found += [f"{op} {sub[k]}" for k, op in marks.items() if k in sub and f"{op} {sub[k]}" not in found]
    return ", ".join(found)


def _params_table(cls: Any) -> list[str]:
    props = cls.Params.model_json_schema(by_alias=True).get("properties", {})
    required = set(cls.Params.model_json_schema(by_alias=True).get("required", []))
    if not props:
        return ["No parameters: write it as a bare `- " + cls.name + "`.", ""]
    rows = ["| parameter | type | default | notes |", "|---|---|---|---|"]
    for name, prop in props.items():
        default = "required" if name in required else f"`{prop.get('default')!r}`".replace("None", "none")
        notes = "; ".join(x for x in (_bounds(prop), prop.get("description", "")) if x)
        rows.append(f"| `{name}` | {_schema_type(prop)} | {default} | {notes} |")
    return rows + [""]


def language_reference() -> str:
    out = ["# Layer kinds", "",
           "Generated from `archspec/layers` by `python tools/gen_docs.py`; do not edit by hand.",
           "Shapes are per sample (batch excluded). Conventions for params, MACs and FLOPs: see the README.", ""]
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        out += [f"## `{name}`", "", cls.doc, "",
                f"- input: {cls.input_desc or 'any shape'}" + (f" ({cls.input_dtype})" if cls.input_dtype != "float32" else ""),
                f"- shape: {cls.shape_rule}",
                f"- MACs: {cls.macs_rule}",
                f"- FLOPs: {cls.flops_rule}",
                f"- inputs: {'two or more (`from: [a, b]`, or branches)' if cls.arity is None else cls.arity}"
                + "".join(f", and the value `{f}` names" for f in cls.reference_fields),
                f"- ONNX: emitted by the kind itself, from opset {cls.min_opset}", ""]
        out += _params_table(cls)
    return "\n".join(out) + "\n"


def error_reference() -> str:
    out = ["# Error codes", "", "Generated from `archspec/errors.py` by `python tools/gen_docs.py`. Codes are stable:",
           "they are never renumbered, only appended.", "", "| code | name |", "|---|---|"]
    out += [f"| `{code}` | {name} |" for code, name in CODES.items()]
    return "\n".join(out) + "\n"


DOCS = {"docs/layers.md": language_reference, "docs/errors.md": error_reference}
