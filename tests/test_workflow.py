"""The users' workflow around the checker: templates and diagrams (pre-commit: test_install.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import archspec
from archspec.cli import TEMPLATES
from archspec.diagram import draw, to_dot, to_mermaid
from archspec.editor_schema import installed_schema, json_schema_text
from archspec.layers import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "archspec.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_writes_a_valid_commented_spec(template: str, tmp_path: Path) -> None:
    target = tmp_path / f"my_{template}.yaml"
    assert run("init", str(target), "--template", template).returncode == 0
    text = target.read_text()
    assert text.startswith("# yaml-language-server: $schema=") and f"name: my_{template}" in text
    schema = Path(text.splitlines()[0].split("$schema=", 1)[1])  # relative to the spec, or absolute
    assert (target.parent / schema).read_text() == json_schema_text()
    report = archspec.check(target)
    module = archspec.build(report, seed=0).eval()
    import torch

    x = torch.randn(2, *report.graph.input.shape)
    assert tuple(module(x).shape) == (2, *report.output.shape)


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "spec.yaml"
    target.write_text("keep me")
    result = run("init", str(target))
    assert result.returncode == 2 and "exists" in result.stderr
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("spec", ["lenet", "vgg16", "googlenet", "resnet50", "lstm_classifier"])
def test_diagram_shows_groups_branches_and_shapes(spec: str) -> None:
    report = archspec.check(ROOT / "specs" / f"{spec}.yaml")
    drawing = draw(report)
    leaves = [n for n in report.nodes if n.leaf]
    nary = sum(1 for n in leaves if REGISTRY[n.kind].arity is None)
    assert len([v for v in drawing.nodes.values() if v[1] == "box"]) == len(leaves) - nary
    assert len([v for v in drawing.nodes.values() if v[1] == "circle"]) == nary  # merges
    edge_labels = {label for _, _, label in drawing.edges}
    assert str(report.output) in edge_labels and "x".join(map(str, report.graph.input.shape)) in edge_labels
    dot, mmd = to_dot(drawing, spec), to_mermaid(drawing)
    assert dot.startswith("digraph") and mmd.startswith("flowchart TB")
    # one edge per value a layer reads: a residual's add has two
    assert len(drawing.edges) == sum(len(n.reads) for n in leaves) + len(report.graph.outputs)


def test_diagram_depth_collapses_blocks() -> None:
    report = archspec.check(ROOT / "specs" / "resnet50.yaml")
    full, collapsed = draw(report), draw(report, depth=1)
    assert len(collapsed.nodes) < len(full.nodes) / 5


@pytest.mark.parametrize("suffix", [".dot", ".mmd"])
def test_graph_cli_text_formats(suffix: str, tmp_path: Path) -> None:
    out = tmp_path / f"lenet{suffix}"
    assert run("graph", str(ROOT / "specs" / "lenet.yaml"), "-o", str(out)).returncode == 0
    assert "16x5x5" in out.read_text()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed (apt-get install graphviz)")
def test_graph_cli_svg(tmp_path: Path) -> None:
    pytest.importorskip("graphviz", reason="the graphviz Python package is not installed")
    out = tmp_path / "lenet.svg"
    assert run("graph", str(ROOT / "specs" / "lenet.yaml"), "-o", str(out)).returncode == 0
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_graph_cli_rejects_unknown_format(tmp_path: Path) -> None:
    result = run("graph", str(ROOT / "specs" / "lenet.yaml"), "-o", str(tmp_path / "x.jpg"))
    assert result.returncode == 1 and ".svg" in result.stderr
    assert not (tmp_path / "x.jpg").exists()


def test_installed_schema_is_current_and_printed_by_schema_path() -> None:
    assert installed_schema().read_text() == json_schema_text(), "run: python tools/gen_docs.py"
    done = run("schema", "--path")
    assert done.returncode == 0 and Path(done.stdout.strip()) == installed_schema()


@pytest.mark.parametrize("command", ["init", "schema"])
def test_every_command_has_a_description(command: str) -> None:
    top = run("--help").stdout
    assert any(line.split()[:1] == [command] and len(line.split()) > 2 for line in top.splitlines())
    assert run(command, "--help").stdout.split("\n\n")[1].strip()  # the paragraph after usage
