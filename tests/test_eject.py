"""`archspec eject`: every zoo spec becomes standalone PyTorch source that imports only torch (and math), passes
ruff, and equals `archspec.build` in state-dict keys (names, order, shapes) and, with the same
weights, in outputs."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import archspec
from archspec.cli import main
from archspec.exporter import vocab_size

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "specs").glob("*.yaml"))
# several inputs or outputs, `from:` references: a straight-line forward (googlenet_aux is in the zoo)
GRAPHS = [ROOT / "examples/image_metadata.yaml", ROOT / "examples/multiscale_head.yaml", ROOT / "examples/c2f_fpn.yaml",
          ROOT / "tests/data/eject_wiring.yaml", ROOT / "tests/data/eject_sequence.yaml"]
BIG = {"vgg11", "vgg11_bn", "vgg16_bn", "vgg11_lrn", "vgg13", "vgg16", "vgg16_c", "vgg19", "resnet101", "resnet152", "alexnet"}
TOLERANCE = 1e-5  # relative to max(1, max|build output|)


def eject(spec: Path, folder: Path) -> tuple[Path, ModuleType]:
    out = folder / f"{spec.stem}_model.py"
    assert main(["eject", str(spec), "-o", str(out)]) == 0
    loader = importlib.util.spec_from_file_location(f"ejected_{spec.stem}", out)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return out, module


def example(report: archspec.Report, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """One random batch per model input."""
    gen = torch.Generator().manual_seed(0)
    xs = []
    for inp in report.graph.inputs:
        shape = (batch, *inp.shape)
        if inp.dtype == "int64":
            xs.append(torch.randint(0, vocab_size(report), shape, generator=gen))
        else:
            xs.append(torch.randn(shape, generator=gen))
    return tuple(xs)


@pytest.mark.parametrize("spec", [pytest.param(s, marks=pytest.mark.slow) if s.stem in BIG else s
                                  for s in ZOO + GRAPHS], ids=lambda s: s.stem)
def test_ejected_module_equals_build(spec: Path, tmp_path: Path):
    path, ejected = eject(spec, tmp_path)
    imports = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imports |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imports.add(node.module)
    assert imports <= {"__future__", "collections", "math", "torch", "torch.nn", "torch.nn.functional"}, imports

    report = archspec.check(spec)
    built = archspec.build(report, seed=0).eval()
    theirs = ejected.build().eval()
    ours_keys = [(k, tuple(v.shape)) for k, v in built.state_dict().items()]
    assert [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()] == ours_keys
    theirs.load_state_dict(built.state_dict(), strict=True)
    xs = example(report, batch=1)  # equality needs no second sample; the zoo's big models run at full size
    with torch.no_grad():
        want, got = built(*xs), theirs(*xs)
    if len(report.graph.outputs) == 1:
        want, got = (want,), (got,)
    else:  # the named tuple `archspec.build`'s module returns, fields named as the spec's outputs
        assert type(got)._fields == type(want)._fields == tuple(report.outputs)
    assert isinstance(got, tuple) and len(got) == len(want) == len(report.graph.outputs)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        assert float((w - g).abs().max()) <= TOLERANCE * max(1.0, float(w.abs().max()))


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is in the test extra")
def test_ejected_zoo_is_ruff_clean(tmp_path: Path):
    for spec in ZOO + GRAPHS:
        assert main(["eject", str(spec), "-o", str(tmp_path / f"{spec.stem}.py")]) == 0
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    r = subprocess.run([ruff, "check", "--isolated", "--select", "E,F,W,I", "--line-length", "120", str(tmp_path)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:]


def test_resnet50_reads_like_its_spec(tmp_path: Path):
    """One class per block, the block's parameters as arguments, its expressions kept, a loop for the repeat."""
    path, _ = eject(ROOT / "specs/resnet50.yaml", tmp_path)
    text = path.read_text()
    assert "class Bottleneck(nn.Module):" in text and "class Stage(nn.Sequential):" in text
    assert "class Resnet50(nn.Sequential):" in text
    assert "    def __init__(self, width, stride, project, in_channels):" in text
    assert "    def __init__(self, width, blocks, stride, in_channels):" in text
    assert "self.conv3 = nn.Conv2d(width, width * expansion, 1, bias=False)" in text
    assert '        if project:\n            self.shortcut.add_module(\n                "conv",\n' in text
    assert "        for i in range(1, blocks):\n" in text
    assert "self.layer3 = Stage(width=256, blocks=6, stride=2, in_channels=512)" in text
    assert "archspec" not in text.replace("`archspec eject`", "").replace("`archspec.build`", "")


def test_references_become_a_straight_line_forward(tmp_path: Path):
    """Several inputs, several outputs and `from:` references: one line per layer, a value kept in a
    variable named after its layer while a later one reads it; blocks stay classes."""
    text = eject(ROOT / "examples/image_metadata.yaml", tmp_path)[0].read_text()
    assert "    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:\n" in text
    assert "        meta_mlp = self.meta_mlp(meta)\n        x = self.joined(image_features, meta_mlp)\n" in text
    text = eject(ROOT / "specs/googlenet_aux.yaml", tmp_path)[0].read_text()
    assert "class Inception(nn.Module):" in text and "class AuxHead(nn.Sequential):" in text
    assert "        aux1 = self.aux1(inception4a)\n        aux2 = self.aux2(inception4d)\n" in text
    assert 'Outputs = namedtuple("Outputs", ["logits", "aux1", "aux2"])\n' in text
    assert "    def forward(self, image: torch.Tensor) -> Outputs:\n" in text
    assert "        return Outputs(logits=fc, aux1=aux1, aux2=aux2)\n" in text
    text = eject(ROOT / "tests/data/eject_wiring.yaml", tmp_path)[0].read_text()
    assert "class Unit(nn.Module):" in text and "        h = self.sum(a, b)\n" in text
    assert "    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:\n" in text


def test_ejected_outputs_keep_the_fields_python_renames(tmp_path: Path):
    """Output names that are a keyword or start with `_` name the same fields as in `archspec.build`'s result."""
    spec = tmp_path / "named.yaml"
    spec.write_text("archspec: 1\nname: named\ninput: {x: [4]}\nnetwork:\n  - {linear: {out: 3}, name: a}\n"
                    "  - {linear: {out: 2}, from: x, name: b}\noutputs: {class: a, _aux: b}\n")
    path, ejected = eject(spec, tmp_path)
    assert 'Outputs = namedtuple("Outputs", ["class_", "_1"], rename=True)\n' in path.read_text()
    built = archspec.build(spec, seed=0).eval()
    theirs = ejected.build().eval()
    theirs.load_state_dict(built.state_dict())
    x = torch.randn(3, 4)
    with torch.no_grad():
        want, got = built(x), theirs(x)
    assert type(got)._fields == type(want)._fields == ("class_", "_1")
    assert torch.equal(got.class_, want.class_) and torch.equal(got._1, want._1)


def test_docs_show_the_current_ejected_block(tmp_path: Path):
    """docs/weights.md shows ResNet-50's bottleneck as eject writes it today."""
    path, _ = eject(ROOT / "specs/resnet50.yaml", tmp_path)
    docs = (ROOT / "docs/weights.md").read_text()
    shown = docs.split("```python\nclass Bottleneck", 1)[1].split("```", 1)[0]
    assert "class Bottleneck" + shown in path.read_text()
