"""One mistake, one diagnostic: a mistake inside a block definition is reported once, at the
definition, with every invocation as a note; a misspelt key is not also a missing one; and the
weak messages of issue #15 name the fix."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import archspec
from archspec import Limits, SpecError

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "archspec.cli"]

VGG = """\
archspec: 1
name: vgg16
input: {image: [3, 224, 224]}
blocks:
  vgg_block:
    params: {convs: int, channels: int}
    body:
      - repeat: convs
        body: [{conv2d: {out: channels, kernal: 3, padding: 1}}, relu]
      - maxpool2d: {kernel: 2, stride: 2}
network:
  - vgg_block: {convs: 2, channels: 64}
  - vgg_block: {convs: 2, channels: 128}
  - vgg_block: {convs: 3, channels: 256}
  - flatten
  - linear: {out: 10}
"""


def diagnostics(tmp_path: Path, text: str, limits: Limits | None = None) -> list[archspec.Diagnostic]:
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(SpecError) as info:
        archspec.check(path, limits=limits)
    return list(info.value.diagnostics)


def test_a_typo_in_a_block_is_one_diagnostic_with_every_invocation(tmp_path: Path) -> None:
    (d,) = diagnostics(tmp_path, VGG)
    assert (d.code, d.loc.line, d.loc.col, d.hint) == ("AS101", 9, 41, "did you mean 'kernel'?")
    assert [(note, loc.line) for note, loc in d.related] == [("in block 'vgg_block' invoked here", n) for n in (12, 13, 14)]


def test_github_format_annotates_it_once(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(VGG)
    done = subprocess.run([*CLI, "check", str(path), "--format", "github"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"::error file={path},line=9,col=41,title=archspec unknown-key::[AS101] unknown key 'kernal' (did you mean 'kernel'?)"]


def test_a_missing_key_without_a_near_miss_is_still_reported(tmp_path: Path) -> None:
    diags = diagnostics(tmp_path, VGG.replace("kernal: 3", "colour: 3"))
    assert sorted(d.code for d in diags) == ["AS101", "AS102"]
    assert {d.message for d in diags} == {"unknown key 'colour'", "missing required key 'kernel'"}


def test_unknown_variable_suggests_the_index_and_is_reported_once(tmp_path: Path) -> None:
    text = VGG.replace("kernal: 3", 'kernel: 3, stride: "2 if idx == 0 else 1"').replace(
        "      - repeat: convs\n", "      - repeat: convs\n        index: i\n")
    (d,) = diagnostics(tmp_path, text)
    assert d.code == "AS121" and d.message.startswith("unknown variable 'idx'") and d.hint == "did you mean 'i'?"
    assert len(d.related) == 3


def test_mis_indented_then_says_to_indent_it(tmp_path: Path) -> None:
    (d,) = diagnostics(tmp_path, """\
        archspec: 1
        name: t
        input: {image: [3, 8, 8]}
        network:
          - residual:
              body: [{conv2d: {out: 3, kernel: 3, padding: 1}}]
            then: [relu]
          - flatten
        """)
    assert d.code == "AS107" and d.loc.line == 5
    assert d.hint == "indent `then` under `residual`: it is a key of residual"


def test_residual_width_change_points_at_the_layer_and_suggests_a_projection(tmp_path: Path) -> None:
    (d,) = diagnostics(tmp_path, """\
        archspec: 1
        name: t
        input: {image: [16, 32, 32]}
        network:
          - residual:
              body:
                - {conv2d: {out: 16, kernel: 3, padding: 1}}
                - relu
                - {conv2d: {out: 32, kernel: 3, stride: 2, padding: 1}}
                - batchnorm
          - flatten
        """)
    assert (d.code, d.loc.line) == ("AS201", 9)  # the conv that changed the width, not the branch
    assert d.hint == ("project the shortcut to the body's shape: "
                      "`shortcut: [{conv2d: {out: 32, kernel: 1, stride: 2, bias: false}}, batchnorm]`")


def test_a_limit_from_the_command_line_points_at_the_largest_layer() -> None:
    with pytest.raises(SpecError) as info:
        archspec.check(ROOT / "specs" / "resnet18.yaml", limits=Limits(max_params=1_000_000))
    (d,) = info.value.diagnostics
    (note, loc), = d.related
    assert d.code == "AS002" and d.loc == loc and "layer4.block0.conv2" in note


def test_compare_a_block_by_its_definition_name_lists_its_invocations() -> None:
    done = subprocess.run([*CLI, "compare", str(ROOT / "specs" / "googlenet_paper.yaml") + "#inception"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "block 'inception' is invoked as inception3a, inception3b, inception4a, inception4b, ..." in done.stderr
    assert "googlenet_paper.yaml#inception3a" in done.stderr
