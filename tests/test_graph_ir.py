"""The graph IR (issue #12): several named inputs and outputs, references by name, N-ary kinds.

Oracles: a hand-written PyTorch GoogLeNet with torchvision's two InceptionAux heads (weights
transferred by position, eval mode, every head compared), onnxruntime against PyTorch for the
two-input and the multi-scale specs, and the counts of tests/test_zoo.py."""

from __future__ import annotations

import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archspec
from archspec import SpecError

ROOT = Path(__file__).resolve().parent.parent


# --- GoogLeNet with both auxiliary classifiers, against a hand-written reference ----------------

class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3r, kernel_size=1), BasicConv2d(c3r, c3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5r, kernel_size=1), BasicConv2d(c5r, c5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.conv = BasicConv2d(cin, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, classes)
        self.dropout = nn.Dropout(0.7)

    def forward(self, x):
        x = torch.flatten(self.conv(F.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class GoogLeNetAux(nn.Module):
    """Szegedy et al. 2015 with torchvision's module layout (googlenet(aux_logits=True))."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, classes)
        self.aux2 = InceptionAux(528, classes)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, classes)

    def forward(self, x):
        x = self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        a = self.inception4a(x)
        aux1 = self.aux1(a)
        d = self.inception4d(self.inception4c(self.inception4b(a)))
        aux2 = self.aux2(d)
        x = self.inception5b(self.inception5a(self.maxpool4(self.inception4e(d))))
        logits = self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))
        return logits, aux1, aux2


def test_googlenet_aux_three_heads_equal_the_reference() -> None:
    report = archspec.check(ROOT / "specs" / "googlenet_aux.yaml")
    assert report.totals.params == 13_004_888  # torchvision googlenet(aux_logits=True)
    assert list(report.outputs) == ["logits", "aux1", "aux2"]
    assert all(t.shape == (1000,) for t in report.outputs.values())
    ours = archspec.build(report, seed=0).eval()
    ref = GoogLeNetAux().eval()
    assert sum(p.numel() for p in ref.parameters()) == 13_004_888
    g = torch.Generator().manual_seed(3)
    src = OrderedDict((k, torch.randn(v.shape, generator=g) * 0.05 if v.is_floating_point() else v)
                      for k, v in ref.state_dict().items())
    for k, v in src.items():  # positive running variances
        if k.endswith("running_var"):
            src[k] = v.abs() + 0.5
    ref.load_state_dict(src)
    a, b = list(ref.state_dict().items()), list(ours.state_dict().items())
    assert [tuple(v.shape) for _, v in a] == [tuple(v.shape) for _, v in b]  # torchvision's order
    assert [k for k, _ in b if k.startswith("aux")] == [k for k, _ in a if k.startswith("aux")]  # and its aux names
    ours.load_state_dict(OrderedDict((k, v.clone()) for (k, _), (_, v) in zip(b, a)))
    x = torch.randn(2, 3, 224, 224, generator=g)
    with torch.no_grad():
        got, want = ours(x), ref(x)
    assert isinstance(got, tuple) and type(got)._fields == ("logits", "aux1", "aux2")  # as torchvision's GoogLeNetOutputs
    for name, r in zip(report.outputs, want):
        y = getattr(got, name)
        assert y.shape == r.shape == (2, 1000), name
        torch.testing.assert_close(y, r, rtol=1e-4, atol=1e-5, msg=f"head {name}")


# --- several inputs, a non-nested skip: check, build, export, verify, run ------------------------

@pytest.mark.parametrize("name", ["image_metadata", "multiscale_head"])
def test_examples_export_verified_and_run(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from archspec.runtime import run_model

    spec = ROOT / "examples" / f"{name}.yaml"
    report = archspec.check(spec)
    assert not report.graph.warnings
    module = archspec.build(report, seed=0).eval()
    assert sum(p.numel() for p in module.parameters()) == report.totals.params
    result = archspec.export(report, tmp_path / f"{name}.onnx")
    assert result.dynamic_axes == {"batch": 0}
    assert [c.input_shape[0] for c in result.checks] == [1, 3]  # every output compared at two batch sizes
    for check, batch in zip(result.checks, (1, 3)):  # the printed report names every input and output
        assert check.input_shapes == tuple((batch, *i.shape) for i in report.graph.inputs)
        assert check.output_shapes == tuple((batch, *t.shape) for t in report.outputs.values())
        assert str(check).startswith(", ".join("x".join(map(str, s)) for s in check.input_shapes) + " -> "
                                     + ", ".join("x".join(map(str, s)) for s in check.output_shapes) + ": ")
    import onnx

    model = onnx.load(str(tmp_path / f"{name}.onnx"))
    assert [i.name for i in model.graph.input] == [i.name for i in report.graph.inputs]
    assert [o.name for o in model.graph.output] == list(report.outputs)
    for value in model.graph.input:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    xs = {i.name: np.random.default_rng(k).standard_normal((4, *i.shape)).astype(np.float32)
          for k, i in enumerate(report.graph.inputs)}
    for k, (iname, x) in enumerate(xs.items()):
        np.save(tmp_path / f"{iname}.npy", x)
    out = run_model(tmp_path / f"{name}.onnx", {n: tmp_path / f"{n}.npy" for n in xs})
    with torch.no_grad():
        want = module(*(torch.from_numpy(x) for x in xs.values()))
    np.testing.assert_allclose(out.outputs["logits"], want.numpy(), rtol=1e-4, atol=1e-5)
    from archspec.cli import main

    args = ["run", str(tmp_path / f"{name}.onnx")]
    assert main(args + [arg for n in xs for arg in ("--input", f"{n}={tmp_path / n}.npy")]) == 0
    printed = capsys.readouterr().out
    assert f"inputs: {', '.join(f'{n} 4x' + 'x'.join(map(str, x.shape[1:])) for n, x in xs.items())}" in printed
    assert "output 'logits': 4x" in printed and " classes by output value" in printed  # class scores
    shapes = [arg for i in report.graph.inputs for arg in ("--shape", f"{i.name}=2x" + "x".join(map(str, i.shape)))]
    assert main(args + shapes) == 0 and "output 'logits': 2x" in capsys.readouterr().out


def test_two_input_model_matches_hand_written_pytorch() -> None:
    report = archspec.check(ROOT / "examples" / "image_metadata.yaml")
    ours = archspec.build(report, seed=0).eval()
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(16, 32, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    mlp = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
    head = nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 5))
    ref = nn.ModuleList([cnn, mlp, head]).eval()
    for (_, dst), (_, src) in zip(ref.state_dict().items(), ours.state_dict().items()):
        dst.copy_(src)
    image, meta = torch.randn(3, 3, 64, 64), torch.randn(3, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(image, meta), head(torch.cat([cnn(image), mlp(meta)], 1)))


def test_multiscale_head_reads_stage2_and_stage4() -> None:
    report = archspec.check(ROOT / "examples" / "multiscale_head.yaml")
    concat = next(n for n in report.graph.nodes if n.kind == "concat")
    assert [report.graph.values[v].name for v in concat.inputs] == ["pool2", "pool4"]
    assert report.node("features").output.shape == (32 + 128,)
    pool2 = next(n for n in report.graph.nodes if n.scope == "pool2")
    assert report.graph.values[pool2.inputs[0]].name == "stage2.pool"


# --- the spec language: references, warnings ---------------------------------------------------

def spec(tmp_path: Path, body: str, head: str = "input: {x: [3, 8, 8]}") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"archspec: 1\nname: s\n{head}\n" + textwrap.dedent(body))
    return path


def first_error(path: Path):
    with pytest.raises(SpecError) as info:
        archspec.check(path)
    return info.value.diagnostics[0]


def test_unknown_reference_suggests_a_visible_name(tmp_path: Path) -> None:
    d = first_error(spec(tmp_path, """\
        network:
          - {conv2d: {out: 4, kernel: 1}, name: stem}
          - {relu, from: stme}
        """))
    assert (d.code, d.loc.line, d.loc.col) == ("AS123", 6, 18)
    assert d.hint == "did you mean 'stem'?"


def test_forward_and_self_references(tmp_path: Path) -> None:
    d = first_error(spec(tmp_path, """\
        network:
          - {relu, from: later}
          - {relu, name: later}
        """))
    assert d.code == "AS124" and "defined after" in d.message and d.related[0][1].line == 6
    d = first_error(spec(tmp_path, """\
        network:
          - {relu, name: me, from: me}
        """))
    assert d.code == "AS125"
    d = first_error(spec(tmp_path, """\
        network:
          - group:
              - {relu, from: outer}
            name: outer
        """))
    assert d.code == "AS125" and "contains it" in d.message


def test_block_internals_are_private(tmp_path: Path) -> None:
    body = """\
        blocks:
          unit:
            body: [{conv2d: {out: 4, kernel: 1}, name: conv}, {relu, name: act}]
        network:
          - {unit, name: u}
          - {relu, from: %s}
        """
    d = first_error(spec(tmp_path, body % "u.conv"))
    assert d.code == "AS126" and "internals of 'u'" in d.message
    d = first_error(spec(tmp_path, body % "conv"))
    assert d.code == "AS126" and "block 'unit'" in d.message
    assert archspec.check(spec(tmp_path, body % "u")).output.shape == (4, 8, 8)


def test_a_block_body_sees_only_its_own_names(tmp_path: Path) -> None:
    d = first_error(spec(tmp_path, """\
        blocks:
          unit:
            body: [{relu, from: stem}]
        network:
          - {conv2d: {out: 4, kernel: 1}, name: stem}
          - unit
        """))
    assert d.code == "AS123" and "sees only the names defined in it" in d.hint


def test_unused_input_and_dead_layer_are_warnings(tmp_path: Path) -> None:
    report = archspec.check(spec(tmp_path, """\
        network:
          - {linear: {out: 4}, name: dead, from: a}
          - {linear: {out: 3}, name: fc, from: a}
        """, head="inputs: {a: [5], b: [6]}"))
    codes = [(w.code, w.severity, w.message) for w in report.graph.warnings]
    assert codes == [("AS401", "warning", "input 'b' is never used"),
                     ("AS402", "warning", "the output of linear 'dead' is never used")]


def test_several_outputs_and_arity(tmp_path: Path) -> None:
    report = archspec.check(spec(tmp_path, """\
        network:
          - {conv2d: {out: 4, kernel: 1}, name: a}
          - {conv2d: {out: 6, kernel: 1}, name: b, from: x}
          - {concat, from: [a, b], name: both}
          - {add, from: [a, a], name: twice}
        outputs: {both: both, twice: twice}
        """))
    assert {k: v.shape for k, v in report.outputs.items()} == {"both": (10, 8, 8), "twice": (4, 8, 8)}
    d = first_error(spec(tmp_path, """\
        network:
          - {relu, name: a}
          - {relu, from: [a, x]}
        """))
    assert d.code == "AS107" and "relu reads one value, got 2" in d.message
    d = first_error(spec(tmp_path, """\
        network:
          - {concat, from: [x]}
        """))
    assert d.code == "AS107" and "two or more" in d.message


def test_export_runs_the_checker_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import archspec.analyze as analyze_mod
    import archspec.exporter.plan as ex

    calls = []
    real = analyze_mod.analyze

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(analyze_mod, "analyze", counting)
    monkeypatch.setattr(ex, "analyze", counting)
    monkeypatch.setattr(archspec.api, "analyze", counting)
    archspec.export(ROOT / "examples" / "image_metadata.yaml", tmp_path / "m.onnx")
    assert len(calls) == 1


# --- expressions: the width rules of MobileNet/EfficientNet/RegNet ------------------------------

def _torchvision_make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """Copied from torchvision.models._utils._make_divisible (the oracle)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.0, 1.3, 1.4])
@pytest.mark.parametrize("channels", [16, 24, 32, 64, 96, 160, 320, 1280])
def test_make_divisible_matches_torchvision(width: float, channels: int) -> None:
    from archspec.expr import evaluate

    got = evaluate("make_divisible(c * w, 8)", {"c": channels, "w": width})
    assert got == _torchvision_make_divisible(channels * width, 8)


def test_rounding_functions_and_their_arity() -> None:
    from archspec.expr import ExprError, evaluate

    assert [evaluate(t, {"x": 7}) for t in ("floor(x / 2)", "ceil(x / 2)", "round(x / 2)", "max(x, 9)")] == [3, 4, 4, 9]
    with pytest.raises(ExprError, match="takes 1 argument"):
        evaluate("floor(1, 2)", {})
    with pytest.raises(ExprError, match="only min"):
        evaluate("abs(-1)", {})


# --- the built module's result carries the output names -----------------------------------------

def test_several_outputs_are_a_named_tuple_as_onnxruntime_names_them(tmp_path: Path) -> None:
    """The result stays a tuple (unpacking, indexing, `len`), and each field holds what onnxruntime
    returns under that output's name from the verified export of the same weights."""
    from archspec.runtime import Session

    report = archspec.check(ROOT / "examples" / "c2f_fpn.yaml")
    module = archspec.build(report, seed=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        got = module(x)
    assert isinstance(got, tuple) and len(got) == 3 and type(got)._fields == ("p3", "p4", "p5")
    p3, p4, p5 = got
    assert p3 is got[0] and p4 is got.p4 and p5 is got[-1] is got.p5 and list(got._asdict()) == ["p3", "p4", "p5"]
    archspec.export(report, tmp_path / "fpn.onnx")  # seed 0's weights; verified against the module
    ort = Session(tmp_path / "fpn.onnx").run({"image": x.numpy()})
    assert list(ort) == list(got._fields)
    for name in report.outputs:
        np.testing.assert_allclose(getattr(got, name).numpy(), ort[name], rtol=1e-4, atol=1e-5, err_msg=name)
    again = archspec.build(report, weights={k: v.numpy() for k, v in module.state_dict().items()}).eval()
    with torch.no_grad():
        loaded = again(x)
    assert type(loaded) is type(got) and all(torch.equal(a, b) for a, b in zip(loaded, got))
    single = archspec.build(ROOT / "examples" / "multiscale_head.yaml", seed=0).eval()
    with torch.no_grad():
        assert type(single(torch.randn(1, 3, 32, 32))) is torch.Tensor  # one output: the tensor itself


def test_output_names_python_cannot_use_as_fields(tmp_path: Path) -> None:
    """The grammar's names are identifiers; a keyword gets a trailing underscore, one starting with
    `_` (or repeating an earlier field) its position, as `namedtuple(rename=True)` does. ONNX keeps the
    spec's names."""
    from archspec.nn import result_fields
    from archspec.runtime import Session

    assert result_fields(("class", "_aux", "box", "class_", "None")) == ("class_", "_1", "box", "_3", "None_")
    path = spec(tmp_path, """\
        network:
          - {linear: {out: 3}, name: a}
          - {linear: {out: 2}, from: x, name: b}
          - {relu, from: x, name: c}
        outputs: {class: a, _aux: b, box: c}
        """, head="input: {x: [4]}")
    report = archspec.check(path)
    module = archspec.build(report, seed=0).eval()
    x = torch.randn(5, 4)
    with torch.no_grad():
        got = module(x)
        want = (F.linear(x, module.a.weight, module.a.bias), F.linear(x, module.b.weight, module.b.bias), F.relu(x))
    assert type(got)._fields == ("class_", "_1", "box")
    assert all(torch.equal(g, w) for g, w in zip((got.class_, got._1, got.box), want))
    archspec.export(report, tmp_path / "s.onnx")
    ort = Session(tmp_path / "s.onnx").run({"x": x.numpy()})
    assert list(ort) == ["class", "_aux", "box"]
    for name, field in zip(ort, type(got)._fields):
        np.testing.assert_allclose(ort[name], getattr(got, field).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["my-out", "1st", "out put", "é"])
def test_an_output_name_that_is_not_an_identifier_is_refused(tmp_path: Path, name: str) -> None:
    """Why every output name is an identifier: the checker refuses any other, where it is written."""
    d = first_error(spec(tmp_path, f"""\
        network:
          - {{relu, name: a}}
        outputs: {{"{name}": a, b: a}}
        """))
    assert (d.code, d.loc.line) == ("AS107", 6) and f"'{name}' (string) is not a valid name" in d.message, d

