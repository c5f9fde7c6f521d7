"""`archspec check` warns (AS403) about each declared symbolic axis that `archspec export` would refuse
dynamic, at the layer that fixes it and with the reason export gives; the exit code stays 0."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli import NO_TORCH, ROOT, main

import archspec
from archspec.exporter import ExportError, export_model

PINNED = """\
archspec: 1
name: pinned
input: {image: [3, h=8, w=8]}
network:
  - conv2d: {out: 2, kernel: 3, padding: 1}
  - flatten
  - linear: {out: 3}
"""

ONE_SIZE = """\
archspec: 1
name: one_size
input: {image: [3, h=12, w=12]}
network:
  - concat:
      a: [{conv2d: {out: 4, kernel: 3}}]
      b: [{adaptive_avgpool2d: {output: 10}}]
  - global_avgpool
"""

SEQUENCE = """\
archspec: 1
name: seq_pinned
input: {x: [time=6, 4]}
network:
  - linear: {out: 5}
  - flatten
  - linear: {out: 2}
"""

FINE = """\
archspec: 1
name: fine
input: {image: [3, h=16, w=16]}
network:
  - conv2d: {out: 4, kernel: 3, stride: 2, padding: 1}
  - global_avgpool
  - linear: {out: 3}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def refusal(report: archspec.analyze.Report, out: Path, dynamic: str | None = None) -> str:
    """What export says, less the layer's location (the diagnostic's own) and its advice (the hint)."""
    with pytest.raises(ExportError) as exc:
        export_model(report, out, dynamic=dynamic)
    text = str(exc.value)
    for node in report.graph.nodes:
        text = text.replace(f" ({node.loc})", "")
    return text.removesuffix("; export it fixed, e.g. --dynamic batch")


def test_a_symbol_that_sizes_parameters_warns_once_at_the_layer(tmp_path, capsys, monkeypatch):
    """h and w pinned by one linear are one mistake: one warning, at the linear."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, PINNED)
    code, out, err = main(capsys, "check", "spec.yaml")
    assert code == 0
    assert err.count("warning[AS403]") == 1, err
    assert "spec.yaml:7:5: warning[AS403]: input axes 'h' and 'w' are declared symbolic (h=8, w=8), but the " \
           "network only accepts h=8, w=8: the parameters of linear 'linear0' take their size from them" in err
    assert "1 of 1 specs ok" in out
    report = archspec.check(tmp_path / "spec.yaml")
    assert [w.code for w in report.warnings] == ["AS403"]
    assert refusal(report, tmp_path / "m.onnx") == (
        "input axis 'h' is declared symbolic (h=8), but the network only accepts h=8: the parameters of "
        "linear 'linear0' take their size from it")


def test_a_flattened_time_axis_warns_with_exports_reason(tmp_path):
    report = archspec.check(write(tmp_path, SEQUENCE))
    (warning,) = report.warnings
    assert (warning.loc.line, warning.loc.col, warning.path, warning.severity) == (7, 5, "network[2]", "warning")
    assert warning.message == refusal(report, tmp_path / "m.onnx") == (
        "input axis 'time' is declared symbolic (time=6), but the network only accepts time=6: the parameters "
        "of linear 'linear1' take their size from it")


def test_one_concat_that_needs_both_sizes_is_one_warning(tmp_path):
    report = archspec.check(write(tmp_path, ONE_SIZE))
    (warning,) = report.warnings
    merge = next(n for n in report.graph.nodes if n.scope == "concat0.merge")
    assert warning.loc == merge.loc
    assert warning.message == (
        "input axes 'h' and 'w' are declared symbolic (h=12, w=12), but the network only accepts h=12, w=12: "
        "the shape rule of concat 'concat0.merge' needs h - 2 == 10, which holds only at h=12; and "
        "w - 2 == 10, which holds only at w=12")


def test_exports_reason_for_a_rule_that_holds_at_one_size(tmp_path):
    """ONE_SIZE with h alone dynamic: the same sentence as check's, for that symbol."""
    report = archspec.check(write(tmp_path, ONE_SIZE.replace("w=12", "12")))
    (warning,) = report.warnings
    assert warning.message == refusal(report, tmp_path / "m.onnx") == (
        "input axis 'h' is declared symbolic (h=12), but the network only accepts h=12: the shape rule of "
        "concat 'concat0.merge' needs h - 2 == 10, which holds only at h=12")


def test_the_sizes_tried_are_named_once(tmp_path):
    """At a nominal 32, twice the nominal size is also nominal+32: the message names 64 once."""
    text = """\
        archspec: 1
        name: tokens
        input: {image: [3, h=32, w=32]}
        network:
          - conv2d: {out: 16, kernel: 1}
          - flatten: {start: 1}
          - transpose: {dims: [0, 1]}
          - residual: {body: [{parameter: {shape: [1024, 16]}}]}
        """
    (warning,) = archspec.check(write(tmp_path, text)).warnings
    assert ("needs h * w == 1024, which holds at h=32 but not at 39, 40, 48, 64, nor at a size up to h=96 "
            "that repeats at larger sizes") in warning.message


def test_symbols_that_vary_warn_nothing_and_export_dynamic(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, FINE)
    code, _, err = main(capsys, "check", "spec.yaml")
    assert (code, err) == (0, "")
    report = archspec.check(tmp_path / "spec.yaml")
    assert report.warnings == ()
    assert dict(export_model(report, tmp_path / "m.onnx").dynamic_axes) == {"batch": 0, "h": 2, "w": 3}


def test_json_and_github_formats_carry_the_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, SEQUENCE)
    code, out, _ = main(capsys, "check", "spec.yaml", "--format", "json")
    (entry,) = json.loads(out)
    assert code == 0 and entry["ok"]
    assert [(w["code"], w["name"], w["severity"], w["line"], w["col"]) for w in entry["warnings"]] == [
        ("AS403", "fixed-symbol", "warning", 7, 5)]
    code, out, _ = main(capsys, "check", "spec.yaml", "--format", "github")
    assert code == 0 and out.startswith("::warning file=spec.yaml,line=7,col=5,title=archspec fixed-symbol::")


def test_the_warning_costs_no_torch_or_onnx(tmp_path):
    pinned, bad = write(tmp_path, PINNED), write(tmp_path, "archspec: 1\nname: x\n", "bad.yaml")
    r = subprocess.run([sys.executable, "-c", NO_TORCH, str(pinned), str(bad)], cwd=ROOT, capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 0, 0, 1] []"


@pytest.mark.parametrize("patch, tokens", [(4, 64), (8, 16)])
def test_a_rule_that_holds_in_a_band_of_sizes_fixes_the_symbol(tmp_path, patch, tokens):
    """A strided patch conv feeding a fixed-size position embedding holds at h=32..32+patch-1 only
    ((h // patch) * (w // patch) == tokens): a second size inside that band (33, or 39 for patch 8)
    would verify an export that fails at 64, so check warns and export refuses the axis."""
    text = f"""
        archspec: 1
        name: vit_like
        input: {{image: [3, h=32, w=32]}}
        network:
          - conv2d: {{out: 16, kernel: {patch}, stride: {patch}}}
          - flatten: {{start: 1}}
          - transpose: {{dims: [0, 1]}}
          - residual: {{body: [{{parameter: {{shape: [{tokens}, 16]}}}}]}}
        """
    report = archspec.check(write(tmp_path, text))
    (warning,) = report.warnings
    assert warning.code == "AS403" and "it cannot be decided symbolically" in warning.message
    with pytest.raises(ExportError, match="only accepts h=32"):
        export_model(report, tmp_path / "m.onnx")
    assert dict(export_model(report, tmp_path / "m.onnx", dynamic="batch").dynamic_axes) == {"batch": 0}
