"""Docs derived from code are current, and every registered kind is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from archspec.layers import REGISTRY
from archspec.reference import DOCS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("rel", sorted(DOCS))
def test_generated_doc_is_current(rel: str) -> None:
    assert (ROOT / rel).read_text() == DOCS[rel](), "run: python tools/gen_docs.py"


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_kind_is_documented(kind: str) -> None:
    cls = REGISTRY[kind]
    assert cls.doc and cls.flops_rule and cls.shape_rule and cls.macs_rule
    assert f"## `{kind}`" in (ROOT / "docs" / "layers.md").read_text()


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_parameter_has_a_type_in_the_reference(kind: str) -> None:
    """A name-valued field (`upsample: {to: skip}`) is `str`, not a blank cell."""
    section = (ROOT / "docs" / "layers.md").read_text().split(f"## `{kind}`\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    assert all(len(r) >= 4 and r[1].strip() for r in rows), [r[0] for r in rows if not r[1].strip()]
