"""Every command whose optional extra is missing says which extra to install: one line, exit 2, no
traceback. The missing modules are simulated by an import hook in a fresh interpreter (the
extras stay installed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from archspec.errors import EXTRAS

ROOT = Path(__file__).resolve().parent.parent
LENET = str(ROOT / "specs" / "lenet.yaml")

HOOK = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from archspec.cli import main
sys.exit(main(sys.argv[2:]))
"""


def extra_modules(extra: str) -> str:
    return ",".join(m for m, e in EXTRAS.items() if e == extra)


@pytest.mark.parametrize("extra,argv", [
    ("torch", ["build", LENET]),
    ("export", ["export", LENET, "-o", "{tmp}/m.onnx"]),  # without torch alone it exports (test_export.py)
    ("export", ["run", LENET]),
    ("export", ["run", "{tmp}/m.onnx"]),
    ("torch", ["bench", LENET, "--rounds", "1"]),
    ("graph", ["graph", LENET, "-o", "{tmp}/m.svg"]),
    ("plot", ["plot", str(ROOT / "specs"), "-o", "{tmp}/zoo.svg"]),
])
def test_missing_extra_names_the_extra(extra: str, argv: list[str], tmp_path: Path) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run([sys.executable, "-c", HOOK, extra_modules(extra), *argv], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("archspec: error: ") and f"install the '{extra}' extra" in done.stderr
    assert f"pip install -e '.[{extra}]'" in done.stderr and "archspec-compiler" in done.stderr
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_checker_commands_need_no_extra(tmp_path: Path) -> None:
    blocked = ",".join(EXTRAS)
    for argv in (["check", LENET], ["summary", LENET], ["compare", LENET, LENET],
                 ["graph", LENET, "-o", str(tmp_path / "m.dot")], ["schema"]):
        done = subprocess.run([sys.executable, "-c", HOOK, blocked, *argv], capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr)
