"""JSON Schema of the spec format, for editors (yaml-language-server), generated from the same
pydantic models and layer registry the checker uses, so it cannot drift from them.

Expressions (`channels * 4`) may stand wherever a number or flag is expected, so every numeric
and boolean type also admits a string; the checker evaluates and validates those.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .layers import REGISTRY
from .schema import Spec

SCHEMA_ID = "https://archspec.dev/schema/archspec-v1.schema.json"
_STRUCTURAL = ("repeat", "concat", "add", "residual", "group")


def _allow_expressions(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _allow_expressions(v) for k, v in node.items()}
        if node.get("type") in ("integer", "number", "boolean"):
            bounds = {k: node.pop(k) for k in list(node) if k not in ("type", "title", "description", "default")}
            typed = {"type": node.pop("type"), **bounds}
            node["anyOf"] = [typed, {"type": "string", "description": "an expression over block parameters"}]
        return node
    if isinstance(node, list):
        return [_allow_expressions(v) for v in node]
    return node


def _inline(schema: dict) -> dict:
    """Resolves pydantic's local $defs so each layer schema stands alone."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node and node["$ref"].startswith("#/$defs/"):
                return walk(defs[node["$ref"].split("/")[-1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


def _item_schema() -> dict:
    ref = {"$ref": "#/$defs/items"}
    name = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "description": "module name of this item"}
    when = {"anyOf": [{"type": "boolean"}, {"type": "string"}], "description": "include the item only if true"}
    ident = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}
    from_ = {"anyOf": [ident, {"type": "array", "items": ident, "minItems": 1}],
             "description": "the earlier value(s) this item reads, by name (an input or a named item)"}
    layer_items = []
    for kind, cls in sorted(REGISTRY.items()):
        params = _allow_expressions(_inline(cls.Params.model_json_schema(by_alias=True)))
        params.pop("title", None)
        params["description"] = cls.doc
        layer_items.append({
            "type": "object", "required": [kind], "additionalProperties": False,
            "properties": {kind: {"anyOf": [params, {"type": "null"}]}, "name": name, "when": when,
                           "from": from_},
        })
    branches = {"anyOf": [{"type": "object", "additionalProperties": ref}, {"type": "array", "items": ref}]}
    structural = [
        {"type": "object", "required": ["repeat", "body"], "additionalProperties": False, "properties": {
            "repeat": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}]},
            "index": {"type": "string"}, "name": name, "when": when, "body": ref}},
        {"type": "object", "required": ["concat"], "additionalProperties": False,
         "properties": {"concat": {"anyOf": [branches, {"type": "null"}]}, "name": name, "when": when, "from": from_}},
        {"type": "object", "required": ["add"], "additionalProperties": False,
         "properties": {"add": {"anyOf": [branches, {"type": "null"}]}, "name": name, "when": when, "from": from_}},
        {"type": "object", "required": ["residual"], "additionalProperties": False, "properties": {
            "residual": {"type": "object", "required": ["body"], "additionalProperties": False,
                         "properties": {"body": ref, "shortcut": ref, "then": ref}}, "name": name, "when": when,
            "from": from_}},
        {"type": "object", "required": ["group"], "additionalProperties": False,
         "properties": {"group": ref, "name": name, "when": when, "from": from_}},
    ]
    known = sorted(REGISTRY) + list(_STRUCTURAL)
    block_call = {
        "description": "a block defined under `blocks:`, with its arguments",
        "type": "object", "minProperties": 1, "maxProperties": 4,
        "not": {"anyOf": [{"required": [k]} for k in known]},
        "additionalProperties": {"anyOf": [{"type": "object"}, {"type": "null"}, {"type": "string"}]},
    }
    item = {"anyOf": [{"type": "string", "description": "a layer kind without parameters, or a block"},
                      *layer_items, *structural, block_call]}
    return {"item": item, "items": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/item"}},
                                             {"$ref": "#/$defs/item"}]}}


def json_schema() -> dict:
    schema = Spec.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    defs.update(_item_schema())
    schema["properties"]["network"] = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/item"}}
    block = defs["BlockDef"]
    block["properties"]["body"] = {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/item"}}
    # The shorthands that schema.py's BeforeValidators accept: `width: int`, `image: [3, 224, 224]`.
    (pattern,) = block["properties"]["params"]["patternProperties"]
    block["properties"]["params"]["patternProperties"][pattern] = {"anyOf": [
        {"enum": ["int", "float", "bool", "str"]}, {"$ref": "#/$defs/ParamDecl"}]}
    for key in ("input", "inputs"):
        prop = schema["properties"][key]
        mapping = next(a for a in prop["anyOf"] if a.get("type") == "object")
        (pattern,) = mapping["patternProperties"]
        mapping["patternProperties"][pattern] = {"anyOf": [
            defs["InputDecl"]["properties"]["shape"], {"$ref": "#/$defs/InputDecl"}]}
    schema["oneOf"] = [{"required": ["input"]}, {"required": ["inputs"]}]
    schema["properties"]["archspec"] = {"const": 1, "description": "format version"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "archspec spec (format v1)", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def installed_schema() -> Path:
    """The schema file installed with the package (package data, kept current by tools/gen_docs.py),
    which `archspec init` points new specs at: no web address to serve."""
    return Path(__file__).resolve().parent / "templates" / "archspec-v1.schema.json"


def schema_reference(spec: Path) -> str:
    """The installed schema as a spec's modeline names it: relative to the spec when both share a
    folder below the root (a spec in a checkout: the path survives moving the checkout), else absolute."""
    schema, folder = installed_schema(), Path(spec).resolve().parent
    if os.path.splitdrive(schema)[0] == os.path.splitdrive(folder)[0] and \
            Path(os.path.commonpath([schema, folder])) != Path(folder.anchor):
        return Path(os.path.relpath(schema, folder)).as_posix()
    return schema.as_posix()
