"""Symbolic dimensions (`archspec.symbolic`): a declared dynamic axis (`[time=50, 128]`,
`[3, h=224, w=224]`) is carried through every kind's shape rule as an expression; the expressions are
checked against the shapes PyTorch computes at other sizes, export takes its dynamic axes and its
verification sizes from them without analysing again, and a rule that cannot hold for every size is
an error naming the layer."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support import recorded_shapes
from test_properties import checked, image_spec

import archspec
import archspec.analyze
from archspec.exporter import ExportError, export_model, verify
from archspec.lower import build_module
from archspec.runtime import Session
from archspec.symbolic import Lin, SymInt, recording

TOL = verify.TOLERANCE["float32"]

IMAGE = """
archspec: 1
name: dynamic_image
input: {image: [3, h=20, w=24]}
network:
  - {conv2d: {out: 6, kernel: 3, padding: 1}, name: same1}
  - {conv2d: {out: 6, kernel: 5}, name: valid5}
  - {conv2d: {out: 8, kernel: 3, stride: 2, padding: 1}, name: down}
  - {conv2d: {out: 8, kernel: 3, dilation: 2, padding: same}, name: dilated}
  - {maxpool2d: {kernel: 3, stride: 2, padding: 1}, name: pool}
  - {avgpool2d: {kernel: 2, stride: 1}, name: avg}
  - {global_avgpool, name: gap}
  - {linear: {out: 3}, name: fc}
"""

SEQUENCE = """
archspec: 1
name: dynamic_sequence
input: {x: [time=12, 6]}
network:
  - {linear: {out: 8}, name: proj}
  - relu
  - {gru: {hidden: 5}, name: gru}
  - {lstm: {hidden: 4, bidirectional: true, layers: 2}, name: lstm}
  - {linear: {out: 3}, name: fc}
"""


def spec(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def shapes_at(report: archspec.Report, env: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every layer's output shape, batch 1 first, from its expressions at `env`."""
    dims = report.symbols.dims
    return {n.scope: (1, *(e.at({**report.symbols.nominal, **env}) for e in dims[n.outputs[0]]))
            for n in report.graph.nodes}


# -- the expressions ---------------------------------------------------------------------------

def test_sym_int_arithmetic_is_exact_and_canonical() -> None:
    n = SymInt(50, Lin.symbol("time"))
    assert int(n) == 50 and str(n) == "50" and f"{n:,}" == "50"
    assert (2 * n + 4) // 2 is not None and ((2 * n + 4) // 2).expr == (n + 2).expr  # (2t + 4) // 2 = t + 2
    assert isinstance(n - n, int) and not isinstance(n - n, SymInt)  # a constant is a plain int
    down = (n - 1) // 2 + 1
    assert int(down) == 25 and not down.expr.affine and down.expr.symbols == {"time"}
    assert down.expr == ((n + 2 - 3) // 2 + 1).expr  # the same computation written two ways
    assert [down.expr.at({"time": t}) for t in (9, 10, 11)] == [(t - 1) // 2 + 1 for t in (9, 10, 11)]
    assert (4 * n).expr.coefficient("time") == 4 and (4 * n).expr.affine
    with recording() as guards:
        assert n == 50 and not n < 3 and (n - 2 == 48)
        assert 7 < n + 1  # a reflected comparison is recorded too
    assert len(guards) == 4 and all(g.holds({"time": 50}) for g in guards)
    assert not guards[0].holds({"time": 51}) and guards[1].holds({"time": 80})


def test_expressions_classify_each_rule(tmp_path: Path) -> None:
    report = archspec.check(spec(tmp_path, IMAGE))
    dims = {n.scope: report.symbols.dims[n.outputs[0]] for n in report.graph.nodes}
    assert [str(e) for e in dims["same1"]] == ["6", "h", "w"]  # stride 1, padded: n -> n
    assert [str(e) for e in dims["valid5"]] == ["6", "h - 4", "w - 4"]  # n -> n - 4: affine
    down = dims["down"][1]  # stride 2: depends on h, not affine
    assert not down.affine and down.symbols == {"h"} and str(down) == "(h - 5) // 2 + 1"
    assert dims["dilated"][1] == down  # 'same' at stride 1 keeps the size for every size
    assert [str(e) for e in dims["gap"]] == ["8"] and not report.symbols.pins
    seq = archspec.check(spec(tmp_path, SEQUENCE, "seq.yaml"))
    out = {n.scope: [str(e) for e in seq.symbols.dims[n.outputs[0]]] for n in seq.graph.nodes}
    assert out["proj"] == ["time", "8"] and out["lstm"] == ["time", "8"] and out["fc"] == ["time", "3"]
    flat = archspec.check(spec(tmp_path, "archspec: 1\nname: f\ninput: {x: [time=5, 4]}\nnetwork: [flatten]\n", "f.yaml"))
    assert str(flat.symbols.dims[-1][0]) == "4*time"


def test_costs_are_the_declared_size_and_unchanged(tmp_path: Path) -> None:
    """Symbols change no count: the same spec with the axes fixed has the same report."""
    dynamic = archspec.check(spec(tmp_path, IMAGE))
    fixed = archspec.check(spec(tmp_path, IMAGE.replace("h=20", "20").replace("w=24", "24"), "fixed.yaml"))
    assert dynamic.totals == fixed.totals
    assert [(n.path, n.output.shape, n.params, n.macs, n.flops) for n in dynamic.nodes] == \
        [(n.path, n.output.shape, n.params, n.macs, n.flops) for n in fixed.nodes]
    assert not fixed.symbols.guards and not fixed.symbols.nominal
    assert all(type(d) is int for t in dynamic.types for d in t.shape)  # the report holds plain ints


@pytest.mark.parametrize("text, sizes", [(IMAGE, [{"h": h, "w": w} for h in range(20, 31) for w in (24, 29)]),
                                         (SEQUENCE, [{"time": t} for t in (1, 2, 12, 13, 40)])])
def test_expressions_equal_pytorch_shapes_at_other_sizes(tmp_path: Path, text: str, sizes: list[dict]) -> None:
    """Oracle: the shapes the PyTorch module (built once, at the declared size) computes at each size."""
    report = archspec.check(spec(tmp_path, text))
    module = build_module(report).eval()
    paths = {n.scope for n in report.graph.nodes}
    for env in sizes:
        assert not report.symbols.holds(env), env  # every shape decision holds at these sizes
        shape = tuple(e.at({**report.symbols.nominal, **env}) for e in report.symbols.dims[0])
        got = recorded_shapes(module, torch.randn(1, *shape), paths)
        want = shapes_at(report, env)
        assert {p: got[p] for p in paths} == want, env


# -- export ------------------------------------------------------------------------------------

def count_analyses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    run = archspec.analyze._Walker.run

    def counted(self):  # type: ignore[no-untyped-def]
        calls.append(1)
        return run(self)

    monkeypatch.setattr(archspec.analyze._Walker, "run", counted)
    return calls


def test_image_height_and_width_export_dynamic_without_reanalysis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = archspec.check(spec(tmp_path, IMAGE))
    calls = count_analyses(monkeypatch)
    result = export_model(report, tmp_path / "m.onnx")
    assert calls == []  # dynamic axes and verification sizes came from the symbols
    assert dict(result.dynamic_axes) == {"batch": 0, "h": 2, "w": 3}
    assert [c.input_shape for c in result.checks] == [(1, 3, 20, 24), (3, 3, 27, 31)]
    assert result.compared and result.max_rel_error <= TOL
    dims = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "h", "w"]
    # independent: the PyTorch module and onnxruntime at a size the export did not check
    module = build_module(report)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in archspec.exporter.initial_state(report, 0).items()})
    x = np.random.default_rng(3).standard_normal((2, 3, 33, 26), dtype=np.float32)
    with torch.no_grad():
        want = module.eval()(torch.from_numpy(x)).numpy()
    got = Session(result.path).run({"image": x})["output"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_several_inputs_export_their_symbols_dynamic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = archspec.check(spec(tmp_path, """
    archspec: 1
    name: two_inputs
    inputs: {x: [time=9, 4], meta: [5], tags: {shape: [time=9], dtype: int64}}
    network:
      - {lstm: {hidden: 6}, name: rnn}
      - {embedding: {vocab: 7, dim: 3}, from: tags, name: embed}
      - {concat, from: [rnn, embed], name: joined}
      - {gru: {hidden: 4, output: last}, name: summary}
      - {linear: {out: 4}, from: meta, name: meta_fc}
      - {concat, from: [summary, meta_fc], name: both}
    outputs: {per_step: joined, pooled: both}
    """))
    calls = count_analyses(monkeypatch)
    result = export_model(report, tmp_path / "m.onnx")
    assert calls == []
    assert dict(result.dynamic_axes) == {"batch": 0, "time": 1}
    assert [c.input_shape for c in result.checks] == [(1, 9, 4), (3, 16, 4)]
    assert result.compared and result.max_rel_error <= TOL
    model = onnx.load(str(result.path))
    named = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
             for v in [*model.graph.input, *model.graph.output]}
    assert named == {"x": ["batch", "time", 4], "meta": ["batch", 5], "tags": ["batch", "time"],
                     "per_step": ["batch", "time", 9], "pooled": ["batch", 8]}


def test_second_size_is_legal_by_construction(tmp_path: Path) -> None:
    """A strided conv and a pool agree only at even sizes: the second size skips nominal+7."""
    report = archspec.check(spec(tmp_path, """
    archspec: 1
    name: parity
    input: {image: [3, h=16, w=16]}
    network:
      - concat:
          a: [{conv2d: {out: 4, kernel: 3, stride: 2, padding: 1}}]
          b: [{maxpool2d: {kernel: 2}}]
      - global_avgpool
    """))
    assert any(str(g) == "(h - 2) // 2 + 1 == (h - 1) // 2 + 1" for _, g in report.symbols.guards)
    assert report.symbols.holds({"h": 23}) and not report.symbols.holds({"h": 24})
    result = export_model(report, tmp_path / "m.onnx")
    assert [c.input_shape for c in result.checks] == [(1, 3, 16, 16), (3, 3, 24, 24)]


def test_a_rule_that_holds_at_one_size_is_an_error_naming_the_layer(tmp_path: Path) -> None:
    path = spec(tmp_path, """
    archspec: 1
    name: one_size
    input: {image: [3, h=12, w=12]}
    network:
      - concat:
          a: [{conv2d: {out: 4, kernel: 3}}]
          b: [{adaptive_avgpool2d: {output: 10}}]
      - global_avgpool
    """)
    report = archspec.check(path)  # fine at the declared size
    with pytest.raises(ExportError) as exc:
        export_model(report, tmp_path / "m.onnx")
    text = str(exc.value)
    assert "only accepts h=12" in text and "holds only at h=12" in text
    merge = report.graph.nodes[2]
    assert f"the shape rule of concat 'concat0.merge' ({merge.loc}) needs h - 2 == 10" in text
    result = export_model(report, tmp_path / "m.onnx", dynamic="batch")
    assert result.max_rel_error <= TOL


def test_weights_sized_by_a_symbol_pin_it(tmp_path: Path) -> None:
    path = spec(tmp_path, """
    archspec: 1
    name: pinned
    input: {image: [3, h=8, w=8]}
    network:
      - conv2d: {out: 2, kernel: 3, padding: 1}
      - flatten
      - linear: {out: 3}
    """)
    report = archspec.check(path)
    assert [(report.graph.nodes[k].kind, sorted(s)) for k, s in report.symbols.pins] == [("linear", ["h", "w"])]
    with pytest.raises(ExportError, match=rf"only accepts h=8: the parameters of linear 'linear0' \({path}:8:5\)"):
        export_model(report, tmp_path / "m.onnx")
    assert dict(export_model(report, tmp_path / "m.onnx", dynamic="batch").dynamic_axes) == {"batch": 0}


def test_an_onnx_form_that_bakes_a_size_is_refused(tmp_path: Path) -> None:
    path = spec(tmp_path, """
    archspec: 1
    name: baked
    input: {image: [3, h=8, w=8]}
    network:
      - conv2d: {out: 2, kernel: 3, padding: 1}
      - adaptive_avgpool2d: {output: 1}
      - flatten
    """)
    report = archspec.check(path)
    with pytest.raises(ExportError, match=rf"adaptive_avgpool2d 'adaptive_avgpool2d0' at {path}:7:5 bakes "
                                          r"kernel_shape=\[8, 8\] from h, w"):
        export_model(report, tmp_path / "m.onnx")
    assert dict(export_model(report, tmp_path / "m.onnx", dynamic="batch").dynamic_axes) == {"batch": 0}


# -- generated networks -------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(image_spec(), st.tuples(st.integers(0, 9), st.integers(0, 9)))
def test_where_the_guards_hold_the_expressions_are_pytorchs_shapes(spec: dict, grow: tuple[int, int]) -> None:
    """Soundness on generated image networks (convs, pools, blocks, residuals, concats): where every
    recorded decision holds, the checker accepts that size and PyTorch computes the shapes the
    expressions give, for every layer."""
    c, h, w = spec["input"]["image"]
    spec["input"]["image"] = [c, f"h={h}", f"w={w}"]
    report = checked(spec)
    env = {"h": h + grow[0], "w": w + grow[1]}
    if report.symbols.holds(env):
        event("a decision changes at the larger size")
        return
    event("every decision holds at the larger size")
    other = archspec.check(report.graph.doc, input_shape=(c, env["h"], env["w"]))
    module = build_module(other).eval()
    paths = {n.scope for n in report.graph.nodes}
    got = recorded_shapes(module, torch.randn(1, c, env["h"], env["w"]), paths)
    want = shapes_at(report, env)
    assert {p: got[p] for p in paths if p in got} == {p: want[p] for p in paths if p in got}
    assert [t.shape for t in other.types] == [tuple(e.at({**report.symbols.nominal, **env}) for e in d)
                                              for d in report.symbols.dims]


@pytest.mark.parametrize("conv", [
    "{out: 4, kernel: 3, stride: 2, padding: same}",
    "{out: 4, kernel: 4, stride: 2, padding: same}",
    "{out: 4, kernel: [3, 5], stride: [2, 3], padding: same}",
    "{out: 4, kernel: 3, stride: 2, dilation: 2, padding: same}",  # onnxruntime refuses auto_pad dilated
    "{out: 4, kernel: [5, 2], stride: [3, 2], dilation: [2, 1], padding: same, groups: 2}",
])
def test_strided_same_conv_exports_with_dynamic_height_and_width(tmp_path: Path, conv: str) -> None:
    """A strided 'same' pads by an amount that depends on the size (output ceil(n/s), the odd row on
    top): PyTorch and ONNX recompute it at each size, equal to a hand-written pad + conv2d."""
    path = spec(tmp_path, f"""
    archspec: 1
    name: same_strided
    input: {{image: [4, h=17, w=23]}}
    network:
      - conv2d: {conv}
    """)
    report = archspec.check(path)
    result = export_model(report, tmp_path / "m.onnx")
    assert dict(result.dynamic_axes) == {"batch": 0, "h": 2, "w": 3}
    module = archspec.build(report, seed=0).eval()
    conv2d = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    session = Session(tmp_path / "m.onnx")
    for h, w in [(17, 23), (20, 31), (9, 40), (33, 8)]:
        x = torch.randn(2, 4, h, w)
        pads = []
        for n, k, s, d in zip((w, h), conv2d.kernel_size[::-1], conv2d.stride[::-1], conv2d.dilation[::-1]):
            total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)  # TF/d2l 'same'
            pads += [(total + 1) // 2, total // 2]
        want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), conv2d.weight, conv2d.bias,
                                          conv2d.stride, 0, conv2d.dilation, conv2d.groups)
        assert want.shape[2:] == (-(-h // conv2d.stride[0]), -(-w // conv2d.stride[1]))
        with torch.no_grad():
            torch.testing.assert_close(module(x), want, rtol=0, atol=0)
        got = session.run({"image": x.numpy()})["output"]
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-5, atol=1e-5)
