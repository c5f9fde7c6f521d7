"""The zoo's `state_dict` key lists, byte for byte and in order, as the tree IR (v1) named them:
weights trained on an earlier build keep loading. The fixture was captured from the v1 code before
the graph IR (issue #12) replaced it; regenerate it only on purpose (`python tests/test_state_keys.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SPECS = HERE.parent / "specs"
FIXTURE = HERE / "data" / "zoo_state_keys.json"


def state_keys(spec: Path) -> list[str]:
    import archspec

    return list(archspec.build(spec, device="meta").state_dict())


@pytest.mark.parametrize("name", sorted(json.loads(FIXTURE.read_text())))
def test_state_dict_keys_unchanged(name: str) -> None:
    expected = json.loads(FIXTURE.read_text())[name]
    assert state_keys(SPECS / f"{name}.yaml") == expected


def test_fixture_covers_the_zoo() -> None:
    assert set(json.loads(FIXTURE.read_text())) >= {p.stem for p in SPECS.glob("*.yaml") if p.stem != "googlenet_aux"}


if __name__ == "__main__":
    keys = {p.stem: state_keys(p) for p in sorted(SPECS.glob("*.yaml"))}
    FIXTURE.write_text(json.dumps(keys, indent=1) + "\n")
    print(f"wrote {FIXTURE} ({len(keys)} specs)", file=sys.stderr)
