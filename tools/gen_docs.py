"""Regenerates the docs that are derived from code (layer reference, error codes, editor schema)."""

from pathlib import Path

from archspec.editor_schema import installed_schema, json_schema_text
from archspec.files import atomic_write_text
from archspec.reference import DOCS

ROOT = Path(__file__).resolve().parent.parent

for rel, render in DOCS.items():
    atomic_write_text(ROOT / rel, render())
atomic_write_text(ROOT / "schema" / "archspec-v1.schema.json", json_schema_text())
atomic_write_text(installed_schema(), json_schema_text())
print("wrote", ", ".join([*DOCS, "schema/archspec-v1.schema.json", str(installed_schema().relative_to(ROOT))]))
