"""The editor JSON Schema is generated from the checker's own models, kept in the repository,
accepts every zoo spec and rejects typos."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from archspec.editor_schema import json_schema_text
from archspec.load import load_file, load_text

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "schema" / "archspec-v1.schema.json"
SPECS = sorted((ROOT / "specs").glob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(COMMITTED.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_current() -> None:
    assert COMMITTED.read_text() == json_schema_text(), "run: archspec schema -o schema/archspec-v1.schema.json"


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_zoo_spec_is_valid_and_points_editors_at_the_schema(spec: Path, validator) -> None:
    assert list(validator.iter_errors(load_file(spec).data)) == []
    assert spec.read_text().startswith("# yaml-language-server: $schema=../schema/archspec-v1.schema.json\n")


@pytest.mark.parametrize("typo, fragment", [
    ("network: [{conv2d: {out: 8, kernal: 3}}]", "kernal"),
    ("network: [{conv2d: {out: 8, kernel: 3, paddng: 1}}]", "paddng"),
    ("network: [{repeat: 2, bodyy: [relu]}]", "bodyy"),
    ("netwrk: [relu]", "netwrk"),
    ("network: [{maxpool2d: {kernel: 2, ceil_mode: 3}}]", "3"),
])
def test_schema_rejects_typos(typo: str, fragment: str, validator) -> None:
    data = load_text(f"archspec: 1\nname: t\ninput: {{x: [3, 8, 8]}}\n{typo}\n").data
    errors = list(validator.iter_errors(data))
    assert errors and any(fragment in json.dumps(e.instance) or fragment in e.message for e in errors)


def test_schema_accepts_expressions_where_numbers_go(validator) -> None:
    data = load_text("""
archspec: 1
name: t
input: {x: [3, 8, 8]}
blocks:
  b:
    params: {c: int, s: {type: int, default: 1}}
    body: [{conv2d: {out: c * 2, kernel: 3, stride: s, bias: "s == 1"}}]
network:
  - b: {c: 4}
  - {repeat: 2, index: i, name: blk, body: [{b: {c: "4 + i"}}]}
""").data
    assert list(validator.iter_errors(data)) == []
